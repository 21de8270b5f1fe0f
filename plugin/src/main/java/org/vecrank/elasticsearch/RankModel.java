package org.vecrank.elasticsearch;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A registered model as the plugin serves it: a registry document ({@code <prefix>-models}, id
 * {@code <model_id>@<version>}) checked and parsed once.
 *
 * <p>Document fields read: {@code model_id}, {@code version}, {@code status}, {@code objective}
 * (optional; must agree with the booster), {@code spec.names} (the feature order),
 * {@code booster} (XGBoost JSON string) and {@code plugin_features} (one entry per name, same order).
 */
public final class RankModel {

    private final String modelId;
    private final int version;
    private final String status;
    private final List<FeatureDef> features;
    private final XGBoostModel booster;

    RankModel(String modelId, int version, String status, List<FeatureDef> features, XGBoostModel booster) {
        this.modelId = modelId;
        this.version = version;
        this.status = status;
        this.features = List.copyOf(features);
        this.booster = booster;
    }

    public String modelId() {
        return modelId;
    }

    public int version() {
        return version;
    }

    public String status() {
        return status;
    }

    public List<FeatureDef> features() {
        return features;
    }

    public XGBoostModel booster() {
        return booster;
    }

    public String objective() {
        return booster.objective();
    }

    public String describe() {
        return "[" + modelId + "] version [" + version + "]";
    }

    /** The first {@code rank} feature, or null when the model has none (its ranks are per shard). */
    FeatureDef firstRankFeature() {
        return features.stream().filter(f -> f.source() == FeatureDef.Source.RANK).findFirst().orElse(null);
    }

    /**
     * Parses a model document's source.
     *
     * @throws IllegalArgumentException naming the model and what is wrong with it
     */
    public static RankModel fromSource(Map<String, Object> source) {
        Object idValue = source.get("model_id");
        if (idValue instanceof String == false || ((String) idValue).isEmpty()) {
            throw new IllegalArgumentException("model document has no [model_id]");
        }
        String modelId = (String) idValue;
        int version = version(source.get("version"), modelId);
        String what = "model [" + modelId + "] version [" + version + "]";
        Object statusValue = source.get("status");
        String status = statusValue == null ? null : String.valueOf(statusValue);

        List<String> names = names(source.get("spec"), what);
        Object rawFeatures = source.get("plugin_features");
        if (rawFeatures == null) {
            throw new IllegalArgumentException(
                what + " has no [plugin_features]: the plugin cannot tell where its features come from; "
                    + "register it with vecrank (vecrank.rank.rescore.plugin_features) to add them"
            );
        }
        if (!(rawFeatures instanceof List<?> list)) {
            throw new IllegalArgumentException(what + " [plugin_features] must be an array");
        }
        List<FeatureDef> features = new ArrayList<>(list.size());
        try {
            for (int i = 0; i < list.size(); i++) {
                features.add(FeatureDef.parse(list.get(i), i));
            }
            FeatureDef.checkRankReferences(features);
            FeatureDef.checkCountReferences(features);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(what + ": " + e.getMessage(), e);
        }
        List<String> featureNames = features.stream().map(FeatureDef::name).toList();
        if (featureNames.equals(names) == false) {
            throw new IllegalArgumentException(
                what + " [plugin_features] names " + featureNames + " differ from [spec.names] " + names
                    + "; they must list the same features in the same order"
            );
        }

        Object boosterValue = source.get("booster");
        if (boosterValue instanceof String == false) {
            throw new IllegalArgumentException(what + " has no [booster] string (the JSON of Booster.save_raw(\"json\"))");
        }
        XGBoostModel booster;
        try {
            booster = XGBoostModel.parse((String) boosterValue);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(what + ": " + e.getMessage(), e);
        }
        if (booster.numFeatures() != names.size()) {
            throw new IllegalArgumentException(
                what + " booster has " + booster.numFeatures() + " features but [spec.names] lists " + names.size()
            );
        }
        if (booster.featureNames() != null && booster.featureNames().equals(names) == false) {
            throw new IllegalArgumentException(
                what + " booster feature names " + booster.featureNames() + " differ from [spec.names] " + names
            );
        }
        Object objective = source.get("objective");
        if (objective != null && objective.equals(booster.objective()) == false) {
            throw new IllegalArgumentException(
                what + " [objective] is [" + objective + "] but the booster's objective is [" + booster.objective() + "]"
            );
        }
        return new RankModel(modelId, version, status, features, booster);
    }

    private static int version(Object value, String modelId) {
        if (value instanceof Number n && n.doubleValue() == Math.rint(n.doubleValue()) && n.longValue() >= 0
            && n.longValue() <= Integer.MAX_VALUE) {
            return n.intValue();
        }
        throw new IllegalArgumentException("model [" + modelId + "] has no whole-number [version] (got " + value + ")");
    }

    private static List<String> names(Object spec, String what) {
        if (spec instanceof Map<?, ?> map && map.get("names") instanceof List<?> list) {
            List<String> names = new ArrayList<>(list.size());
            for (Object n : list) {
                if (!(n instanceof String s)) {
                    throw new IllegalArgumentException(what + " [spec.names] must be strings, got " + n);
                }
                names.add(s);
            }
            if (names.isEmpty()) {
                throw new IllegalArgumentException(what + " [spec.names] is empty");
            }
            return names;
        }
        throw new IllegalArgumentException(what + " has no [spec.names] (the ordered feature names)");
    }
}
