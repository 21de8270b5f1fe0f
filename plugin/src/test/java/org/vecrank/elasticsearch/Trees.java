package org.vecrank.elasticsearch;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;

/** Handcrafted XGBoost JSON for the tests, in the layout {@code Booster.save_raw("json")} writes. */
final class Trees {

    private Trees() {}

    /** One node: a split (feature, threshold, default left, children) or a leaf (value). */
    record Node(int left, int right, int feature, float value, boolean defaultLeft) {
        static Node split(int feature, float threshold, boolean defaultLeft, int left, int right) {
            return new Node(left, right, feature, threshold, defaultLeft);
        }

        static Node leaf(float value) {
            return new Node(-1, -1, 0, value, false);
        }
    }

    static String tree(int id, Node... nodes) {
        return String.format(
            Locale.ROOT,
            "{\"base_weights\":[%s],\"categories\":[],\"categories_nodes\":[],\"categories_segments\":[],\"categories_sizes\":[],"
                + "\"default_left\":[%s],\"id\":%d,\"left_children\":[%s],\"loss_changes\":[%s],\"parents\":[%s],"
                + "\"right_children\":[%s],\"split_conditions\":[%s],\"split_indices\":[%s],\"split_type\":[%s],"
                + "\"sum_hessian\":[%s],\"tree_param\":{\"num_deleted\":\"0\",\"num_feature\":\"3\",\"num_nodes\":\"%d\","
                + "\"size_leaf_vector\":\"1\"}}",
            join(nodes, n -> "0"),
            join(nodes, n -> n.defaultLeft() ? "1" : "0"),
            id,
            join(nodes, n -> Integer.toString(n.left())),
            join(nodes, n -> "0"),
            join(nodes, n -> "2147483647"),
            join(nodes, n -> Integer.toString(n.right())),
            join(nodes, n -> Float.toString(n.value())),
            join(nodes, n -> Integer.toString(n.feature())),
            join(nodes, n -> "0"),
            join(nodes, n -> "1"),
            nodes.length
        );
    }

    private static String join(Node[] nodes, java.util.function.Function<Node, String> f) {
        List<String> out = new ArrayList<>();
        for (Node n : nodes) {
            out.add(f.apply(n));
        }
        return String.join(",", out);
    }

    static String booster(String objective, String baseScore, int numFeatures, List<String> names, String... trees) {
        String featureNames = names == null ? "[]" : names.stream().map(n -> "\"" + n + "\"").collect(Collectors.joining(",", "[", "]"));
        String info = java.util.stream.IntStream.range(0, trees.length).mapToObj(i -> "0").collect(Collectors.joining(","));
        return "{\"learner\":{\"attributes\":{},\"feature_names\":" + featureNames + ",\"feature_types\":[],"
            + "\"gradient_booster\":{\"model\":{\"gbtree_model_param\":{\"num_parallel_tree\":\"1\",\"num_trees\":\"" + trees.length + "\"},"
            + "\"iteration_indptr\":[],\"tree_info\":[" + info + "],\"trees\":[" + String.join(",", trees) + "]},\"name\":\"gbtree\"},"
            + "\"learner_model_param\":{\"base_score\":" + baseScore + ",\"boost_from_average\":\"1\",\"num_class\":\"0\","
            + "\"num_feature\":\"" + numFeatures + "\",\"num_target\":\"1\"},"
            + "\"objective\":{\"name\":\"" + objective + "\"}},\"version\":[3,2,0]}";
    }

    /** A one-split tree on feature f: x < threshold -> left (1.0) else right (2.0). */
    static String stump(int f, float threshold, boolean defaultLeft) {
        return tree(0, Node.split(f, threshold, defaultLeft, 1, 2), Node.leaf(1.0f), Node.leaf(2.0f));
    }

    static Map<String, Object> modelDoc(String booster, List<String> names, List<Map<String, Object>> features) {
        Map<String, Object> doc = new java.util.LinkedHashMap<>();
        doc.put("model_id", "m");
        doc.put("version", 2);
        doc.put("status", "active");
        doc.put("spec", Map.of("names", names));
        doc.put("booster", booster);
        doc.put("plugin_features", features);
        return doc;
    }
}
