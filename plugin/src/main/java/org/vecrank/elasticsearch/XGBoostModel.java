package org.vecrank.elasticsearch;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * A gradient-boosted tree ensemble read from the JSON that {@code Booster.save_raw("json")} writes,
 * evaluated the way XGBoost's CPU predictor does.
 *
 * <p>Semantics: features are float32; at a split, a missing value (NaN) goes to the
 * {@code default_left} side, otherwise {@code x < threshold} goes left and everything else
 * (equality included) right; thresholds and leaf values are float32; the margin is the base score
 * (on the margin scale: logit for logistic objectives) plus the leaves of every tree, summed in
 * float32 tree by tree; the output is the margin itself for ranking and squared-error objectives,
 * its sigmoid for logistic ones.
 */
public final class XGBoostModel {

    /** Objectives whose prediction is the margin. */
    static final Set<String> IDENTITY_OBJECTIVES = Set.of("rank:ndcg", "rank:pairwise", "rank:map", "reg:squarederror");
    /** Objectives whose prediction is sigmoid(margin). */
    static final Set<String> LOGISTIC_OBJECTIVES = Set.of("binary:logistic", "reg:logistic");

    private final String objective;
    private final boolean logistic;
    private final float baseScore;
    private final float baseMargin;
    private final int numFeatures;
    private final List<String> featureNames;
    private final int numTrees;
    private final Forest forest;

    private XGBoostModel(String objective, float baseScore, int numFeatures, List<String> featureNames, Tree[] trees) {
        this.objective = objective;
        this.logistic = LOGISTIC_OBJECTIVES.contains(objective);
        this.baseScore = baseScore;
        this.numFeatures = numFeatures;
        this.featureNames = featureNames;
        this.numTrees = trees.length;
        this.forest = new Forest(trees, numFeatures);
        if (logistic) {
            if (!(baseScore > 0f && baseScore < 1f)) {
                throw new IllegalArgumentException(
                    "[booster] base_score " + baseScore + " is not a probability in (0, 1), which objective [" + objective + "] needs"
                );
            }
            // XGBoost's ProbToMargin for logistic objectives, in float as it does it.
            this.baseMargin = -(float) Math.log(1.0f / baseScore - 1.0f);
        } else {
            this.baseMargin = baseScore;
        }
    }

    public String objective() {
        return objective;
    }

    public int numFeatures() {
        return numFeatures;
    }

    public int numTrees() {
        return numTrees;
    }

    /** The feature names saved in the booster, or null when it has none. */
    public List<String> featureNames() {
        return featureNames;
    }

    public float baseScore() {
        return baseScore;
    }

    /** The raw margin for one row of {@link #numFeatures()} values starting at {@code offset}. */
    public float margin(float[] row, int offset) {
        return forest.margin(row, offset, baseMargin);
    }

    /** What {@code Booster.predict(output_margin=False)} returns for the row. */
    public float predict(float[] row, int offset) {
        float margin = margin(row, offset);
        return logistic ? sigmoid(margin) : margin;
    }

    /**
     * {@link #predict} of rows {@code from} (inclusive) to {@code to} of {@code rows} (each {@code width}
     * values) into {@code out[from..to)}, tree by tree over the rows rather than row by row: a tree's
     * nodes stay in cache while it scores them all. Every row's sum takes the trees in the same
     * order as {@link #margin}, so each value is exactly {@link #predict}'s.
     */
    public void predict(float[] rows, int width, int from, int to, float[] out) {
        forest.margins(rows, width, from, to, baseMargin, out);
        if (logistic) {
            for (int i = from; i < to; i++) {
                out[i] = sigmoid(out[i]);
            }
        }
    }

    static float sigmoid(float x) {
        return (float) (1.0 / (1.0 + Math.exp(-(double) x)));
    }

    // ---------------------------------------------------------------------------------------------
    // parsing

    /**
     * Parses the booster JSON.
     *
     * @throws IllegalArgumentException naming what is malformed or unsupported
     */
    public static XGBoostModel parse(String json) {
        if (json == null || json.isBlank()) {
            throw new IllegalArgumentException("[booster] is empty");
        }
        Object root;
        try {
            root = ExactJson.parse(json);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("[booster] is not valid JSON: " + e.getMessage(), e);
        }
        Map<String, Object> learner = object(object(root, "booster"), "learner", "booster");
        Map<String, Object> objectiveObj = object(learner, "objective", "learner");
        String objective = string(objectiveObj, "name", "learner.objective");
        if (!IDENTITY_OBJECTIVES.contains(objective) && !LOGISTIC_OBJECTIVES.contains(objective)) {
            throw new IllegalArgumentException(
                "[booster] objective [" + objective + "] is not supported; supported: rank:ndcg, rank:pairwise, rank:map, "
                    + "reg:squarederror, binary:logistic, reg:logistic"
            );
        }

        Map<String, Object> modelParam = object(learner, "learner_model_param", "learner");
        int numFeatures = (int) wholeNumber(modelParam.get("num_feature"), "learner.learner_model_param.num_feature");
        Object numClass = modelParam.get("num_class");
        if (numClass != null && wholeNumber(numClass, "learner.learner_model_param.num_class") > 1) {
            throw new IllegalArgumentException("[booster] is a multi-class model (num_class " + numClass + "); only single-output models are supported");
        }
        Object numTarget = modelParam.get("num_target");
        if (numTarget != null && wholeNumber(numTarget, "learner.learner_model_param.num_target") > 1) {
            throw new IllegalArgumentException("[booster] is a multi-target model; only single-output models are supported");
        }
        float baseScore = baseScore(modelParam.get("base_score"));

        List<String> featureNames = null;
        Object names = learner.get("feature_names");
        if (names instanceof List<?> list && list.isEmpty() == false) {
            featureNames = new ArrayList<>(list.size());
            for (Object n : list) {
                featureNames.add(String.valueOf(n));
            }
            if (featureNames.size() != numFeatures) {
                throw new IllegalArgumentException(
                    "[booster] names " + featureNames.size() + " features but num_feature is " + numFeatures
                );
            }
        }

        Map<String, Object> gb = object(learner, "gradient_booster", "learner");
        String boosterName = string(gb, "name", "learner.gradient_booster");
        if (boosterName.equals("gbtree") == false) {
            throw new IllegalArgumentException(
                "[booster] uses the [" + boosterName + "] booster; only [gbtree] is supported (dart and gblinear are not)"
            );
        }
        Map<String, Object> model = object(gb, "model", "learner.gradient_booster");
        List<?> treeList = list(model, "trees", "learner.gradient_booster.model");
        Object info = model.get("tree_info");
        if (info instanceof List<?> groups) {
            for (Object g : groups) {
                if (wholeNumber(g, "tree_info") != 0) {
                    throw new IllegalArgumentException("[booster] has trees for more than one output group; only single-output models are supported");
                }
            }
        }
        Tree[] trees = new Tree[treeList.size()];
        for (int i = 0; i < trees.length; i++) {
            trees[i] = Tree.parse(treeList.get(i), i, numFeatures);
        }
        return new XGBoostModel(objective, baseScore, numFeatures, featureNames, trees);
    }

    /** base_score is a number, a string like "5E-1", or (XGBoost 3) a one-element vector "[5E-1]". */
    static float baseScore(Object value) {
        if (value == null) {
            throw new IllegalArgumentException("[booster] has no learner.learner_model_param.base_score");
        }
        String text = value instanceof ExactJson.Num n ? n.text() : String.valueOf(value).trim();
        if (text.startsWith("[") && text.endsWith("]")) {
            text = text.substring(1, text.length() - 1).trim();
            if (text.contains(",")) {
                throw new IllegalArgumentException("[booster] base_score [" + value + "] has several values; only single-output models are supported");
            }
        }
        try {
            float f = Float.parseFloat(text);
            if (Float.isFinite(f) == false) {
                throw new NumberFormatException();
            }
            return f;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("[booster] base_score [" + value + "] is not a number");
        }
    }

    static Map<String, Object> object(Object parent, String key, String where) {
        if (parent instanceof Map<?, ?> map) {
            Object value = map.get(key);
            if (value instanceof Map<?, ?> child) {
                @SuppressWarnings("unchecked")
                Map<String, Object> typed = (Map<String, Object>) child;
                return typed;
            }
            throw new IllegalArgumentException("[booster] has no object [" + key + "] in [" + where + "]");
        }
        throw new IllegalArgumentException("[booster] [" + where + "] is not an object");
    }

    private static Map<String, Object> object(Object root, String where) {
        if (root instanceof Map<?, ?> map) {
            @SuppressWarnings("unchecked")
            Map<String, Object> typed = (Map<String, Object>) map;
            return typed;
        }
        throw new IllegalArgumentException("[" + where + "] is not a JSON object");
    }

    static List<?> list(Map<String, Object> parent, String key, String where) {
        Object value = parent.get(key);
        if (value instanceof List<?> l) {
            return l;
        }
        throw new IllegalArgumentException("[booster] has no array [" + key + "] in [" + where + "]");
    }

    static String string(Map<String, Object> parent, String key, String where) {
        Object value = parent.get(key);
        if (value instanceof String s) {
            return s;
        }
        throw new IllegalArgumentException("[booster] has no string [" + key + "] in [" + where + "]");
    }

    /** XGBoost writes integer parameters as strings ("10") and arrays as numbers. */
    static long wholeNumber(Object value, String where) {
        try {
            if (value instanceof ExactJson.Num n) {
                return n.asLong();
            }
            if (value instanceof String s) {
                return new ExactJson.Num(s.trim()).asLong();
            }
        } catch (IllegalArgumentException e) {
            // fall through to the message below
        }
        throw new IllegalArgumentException("[booster] [" + where + "] is not a whole number: " + value);
    }

    /** One regression tree as parsed, in flat arrays (node 0 is the root; a node whose left child is -1 is a leaf); {@link Forest} packs them for evaluation. */
    static final class Tree {
        final int[] left;
        final int[] right;
        final int[] feature;
        final float[] value; // the threshold of a split, the output of a leaf
        final boolean[] defaultLeft;

        Tree(int[] left, int[] right, int[] feature, float[] value, boolean[] defaultLeft) {
            this.left = left;
            this.right = right;
            this.feature = feature;
            this.value = value;
            this.defaultLeft = defaultLeft;
        }

        static Tree parse(Object raw, int index, int numFeatures) {
            String where = "trees[" + index + "]";
            if (raw instanceof Map<?, ?> == false) {
                throw new IllegalArgumentException("[booster] " + where + " is not an object");
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> tree = (Map<String, Object>) raw;
            Object treeParam = tree.get("tree_param");
            if (treeParam instanceof Map<?, ?> tp) {
                Object leafVector = tp.get("size_leaf_vector");
                if (leafVector != null && wholeNumber(leafVector, where + ".tree_param.size_leaf_vector") > 1) {
                    throw new IllegalArgumentException("[booster] " + where + " has vector leaves; only single-output models are supported");
                }
            }
            Object splitType = tree.get("split_type");
            if (splitType instanceof List<?> types) {
                for (Object t : types) {
                    if (wholeNumber(t, where + ".split_type") != 0) {
                        throw new IllegalArgumentException("[booster] " + where + " has categorical splits, which are not supported");
                    }
                }
            }
            List<?> lc = list(tree, "left_children", where);
            List<?> rc = list(tree, "right_children", where);
            List<?> si = list(tree, "split_indices", where);
            List<?> sc = list(tree, "split_conditions", where);
            List<?> dl = list(tree, "default_left", where);
            int n = lc.size();
            if (n == 0) {
                throw new IllegalArgumentException("[booster] " + where + " has no nodes");
            }
            if (rc.size() != n || si.size() != n || sc.size() != n || dl.size() != n) {
                throw new IllegalArgumentException(
                    "[booster] " + where + " arrays differ in length (left_children " + n + ", right_children " + rc.size()
                        + ", split_indices " + si.size() + ", split_conditions " + sc.size() + ", default_left " + dl.size() + ")"
                );
            }
            int[] left = new int[n];
            int[] right = new int[n];
            int[] feature = new int[n];
            float[] value = new float[n];
            boolean[] defaultLeft = new boolean[n];
            for (int i = 0; i < n; i++) {
                left[i] = (int) wholeNumber(lc.get(i), where + ".left_children");
                right[i] = (int) wholeNumber(rc.get(i), where + ".right_children");
                feature[i] = (int) wholeNumber(si.get(i), where + ".split_indices");
                Object v = sc.get(i);
                if (!(v instanceof ExactJson.Num num)) {
                    throw new IllegalArgumentException("[booster] " + where + ".split_conditions[" + i + "] is not a number");
                }
                value[i] = num.asFloat();
                Object d = dl.get(i);
                defaultLeft[i] = d instanceof Boolean b ? b : wholeNumber(d, where + ".default_left") != 0;
            }
            Tree t = new Tree(left, right, feature, value, defaultLeft);
            t.check(where, numFeatures);
            return t;
        }

        /** Every node reachable once from the root, children in range, split features in range, finite values. */
        private void check(String where, int numFeatures) {
            int n = left.length;
            boolean[] seen = new boolean[n];
            int[] stack = new int[n + 1];
            int top = 0;
            stack[top++] = 0;
            while (top > 0) {
                int node = stack[--top];
                if (seen[node]) {
                    throw new IllegalArgumentException("[booster] " + where + " reaches node " + node + " twice; it is not a tree");
                }
                seen[node] = true;
                if (Float.isFinite(value[node]) == false) {
                    throw new IllegalArgumentException("[booster] " + where + " node " + node + " has a non-finite value");
                }
                if (left[node] == -1) {
                    if (right[node] != -1) {
                        throw new IllegalArgumentException("[booster] " + where + " node " + node + " has a right child but no left one");
                    }
                    continue;
                }
                for (int child : new int[] { left[node], right[node] }) {
                    if (child <= 0 || child >= n) {
                        throw new IllegalArgumentException(
                            String.format(Locale.ROOT, "[booster] %s node %d has child %d outside 1..%d", where, node, child, n - 1)
                        );
                    }
                    if (top >= stack.length) {
                        throw new IllegalArgumentException("[booster] " + where + " is not a tree");
                    }
                    stack[top++] = child;
                }
                if (feature[node] < 0 || feature[node] >= numFeatures) {
                    throw new IllegalArgumentException(
                        "[booster] " + where + " node " + node + " splits on feature " + feature[node] + " of " + numFeatures
                    );
                }
            }
        }
    }
}
