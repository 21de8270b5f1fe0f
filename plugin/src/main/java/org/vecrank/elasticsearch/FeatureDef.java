package org.vecrank.elasticsearch;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * Where the plugin gets one model feature: one entry of a model document's {@code plugin_features}.
 *
 * <pre>
 * {"name": "knn_score", "source": "score"}
 * {"name": "bm25", "source": "score", "transform": "positive"}
 * {"name": "ctr", "source": "field", "field": "signals.ctr", "transform": "identity"}
 * {"name": "cos_profile", "source": "cosine", "field": "embedding", "param": "profile_vector"}
 * {"name": "cos_hist_max", "source": "cosine_max", "field": "embedding", "param": "history_vectors"}
 * {"name": "affinity.genres", "source": "overlap", "field": "genres", "param": "history_genres"}
 * {"name": "hist_len", "source": "param"}
 * {"name": "cooc", "source": "param_map", "param": "cooc", "key_field": "item_id"}
 * {"name": "cf_score", "source": "dot", "field": "cf_vector", "param": "cf_vector"}
 * {"name": "rank_cf", "source": "rank", "of": "cf_score"}
 * {"name": "n_sources", "source": "count", "of": ["rank_text", "rank_cf", "rank_cooc", "popular_rank"], "limits": [100, 100, 50, 50]}
 * </pre>
 *
 * <p>{@code of} names the feature a {@code rank} feature ranks by; {@link #checkRankReferences} checks it
 * against the whole list. A {@code count} feature's {@code of} is an array of names instead, held in
 * {@link #countOf()} (its {@link #of()} is null), with one limit each in {@link #limits()};
 * {@link #checkCountReferences} checks them against the whole list.
 */
public record FeatureDef(
    String name,
    Source source,
    String field,
    Transform transform,
    String param,
    String keyField,
    String of,
    List<String> countOf,
    List<Double> limits
) {

    public enum Source {
        SCORE, FIELD, COSINE, COSINE_MAX, COSINE_MEAN, OVERLAP, PARAM, PARAM_MAP, DOT, RANK, COUNT;

        String jsonName() {
            return name().toLowerCase(Locale.ROOT);
        }

        boolean isCosine() {
            return this == COSINE || this == COSINE_MAX || this == COSINE_MEAN;
        }
    }

    public enum Transform {
        /** {@code positive}: the value where above 0, else missing (a preceding query rescore's score: 0 where the query does not match). */
        IDENTITY, LOG1P, DAYS_SINCE, POSITIVE;

        String jsonName() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    static final long DAY_MS = 86_400_000L;

    public FeatureDef {
        Objects.requireNonNull(name);
        Objects.requireNonNull(source);
        countOf = countOf == null ? null : List.copyOf(countOf);
        limits = limits == null ? null : List.copyOf(limits);
    }

    /** A feature of any source but {@code param_map}, {@code rank} and {@code count} (no key field, no {@code of}). */
    public FeatureDef(String name, Source source, String field, Transform transform, String param) {
        this(name, source, field, transform, param, null, null, null, null);
    }

    /** A feature of any source but {@code rank} and {@code count}. */
    public FeatureDef(String name, Source source, String field, Transform transform, String param, String keyField) {
        this(name, source, field, transform, param, keyField, null, null, null);
    }

    /** A feature of any source but {@code count}. */
    public FeatureDef(String name, Source source, String field, Transform transform, String param, String keyField, String of) {
        this(name, source, field, transform, param, keyField, of, null, null);
    }

    /** A {@code count} feature: how many of the features {@code of} are at most their {@code limits}. */
    static FeatureDef count(String name, List<String> of, List<Double> limits) {
        return new FeatureDef(name, Source.COUNT, null, null, null, null, null, of, limits);
    }

    /** Applies {@link #transform()} to a doc value (NaN stays NaN). */
    double transform(double value, long nowMs) {
        if (Double.isNaN(value)) {
            return value;
        }
        return switch (transform == null ? Transform.IDENTITY : transform) {
            case IDENTITY -> value;
            case LOG1P -> Math.log1p(Math.max(value, 0.0));
            case DAYS_SINCE -> (nowMs - value) / DAY_MS;
            case POSITIVE -> value > 0 ? value : Double.NaN;
        };
    }

    private static final Set<String> KEYS = Set.of("name", "source", "field", "transform", "param", "key_field", "of", "limits");

    /** Parses entry {@code index} of {@code plugin_features}, refusing anything it does not understand. */
    static FeatureDef parse(Object raw, int index) {
        String where = "[plugin_features][" + index + "]";
        if (!(raw instanceof Map<?, ?> map)) {
            throw new IllegalArgumentException(where + " must be an object like {\"name\": ..., \"source\": ...}");
        }
        for (Object key : map.keySet()) {
            if (KEYS.contains(String.valueOf(key)) == false) {
                throw new IllegalArgumentException(where + " has unknown key [" + key + "]; known: name, source, field, transform, param, key_field, of, limits");
            }
        }
        String name = text(map, "name", where, true);
        where = "[plugin_features][" + index + "] (feature [" + name + "])";
        String sourceText = text(map, "source", where, true);
        Source source;
        try {
            source = Source.valueOf(sourceText.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                where + " has unknown source [" + sourceText + "]; known: score, field, cosine, cosine_max, cosine_mean, overlap, param, param_map, dot, rank, count"
            );
        }
        String field = text(map, "field", where, false);
        String transformText = text(map, "transform", where, false);
        String param = text(map, "param", where, false);
        String keyField = text(map, "key_field", where, false);
        if (source != Source.PARAM_MAP && keyField != null) {
            throw new IllegalArgumentException(where + " with source [" + source.jsonName() + "] takes no [key_field]");
        }
        if (source != Source.RANK && source != Source.COUNT && map.get("of") != null) {
            throw new IllegalArgumentException(where + " with source [" + source.jsonName() + "] takes no [of]");
        }
        if (source != Source.COUNT && map.get("limits") != null) {
            throw new IllegalArgumentException(where + " with source [" + source.jsonName() + "] takes no [limits]");
        }
        // Each source reads [of] in its own form: one name for rank, an array of names for count.
        if (source == Source.RANK && map.get("of") instanceof List) {
            throw new IllegalArgumentException(
                where + " [of] must be a non-empty string, the name of one feature (an array of names is the form of source [count])"
            );
        }
        String of = source == Source.RANK ? text(map, "of", where, false) : null;
        List<String> countOf = null;
        List<Double> limits = null;
        Transform transform = null;
        switch (source) {
            case SCORE -> {
                forbid(where, source, field, "field", param, "param", null, null);
                transform = transform(transformText, where);
            }
            case FIELD -> {
                require(where, source, field, "field");
                forbid(where, source, param, "param", null, null, null, null);
                transform = transform(transformText, where);
            }
            case COSINE, COSINE_MAX, COSINE_MEAN, OVERLAP, DOT -> {
                require(where, source, field, "field");
                require(where, source, param, "param");
                forbid(where, source, transformText, "transform", null, null, null, null);
            }
            case PARAM -> {
                forbid(where, source, field, "field", transformText, "transform", null, null);
                if (param == null) {
                    param = name;
                }
            }
            case PARAM_MAP -> {
                require(where, source, param, "param");
                require(where, source, keyField, "key_field");
                forbid(where, source, field, "field", transformText, "transform", null, null);
            }
            case RANK -> {
                require(where, source, of, "of");
                forbid(where, source, field, "field", transformText, "transform", param, "param");
            }
            case COUNT -> {
                forbid(where, source, field, "field", transformText, "transform", param, "param");
                countOf = names(map.get("of"), where + " with source [count]");
                limits = limits(map.get("limits"), where + " with source [count]");
                if (countOf.size() != limits.size()) {
                    throw new IllegalArgumentException(
                        where + " with source [count] [of] and [limits] differ in length (" + countOf.size() + " and " + limits.size()
                            + "); give one limit per feature"
                    );
                }
            }
        }
        return new FeatureDef(name, source, field, transform, param, keyField, of, countOf, limits);
    }

    /** A [transform] by name; absent: identity. */
    private static Transform transform(String text, String where) {
        if (text == null) {
            return Transform.IDENTITY;
        }
        try {
            return Transform.valueOf(text.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + " has unknown transform [" + text + "]; known: identity, log1p, days_since, positive");
        }
    }

    /** A count's [of]: a non-empty array of distinct, non-empty strings. {@code where} ends with the source. */
    private static List<String> names(Object value, String where) {
        if (value == null) {
            throw new IllegalArgumentException(where + " needs [of]");
        }
        if (!(value instanceof List<?> list)) {
            throw new IllegalArgumentException(
                where + " [of] must be an array of feature names, like [\"rank_cf\", \"popular_rank\"], got " + describe(value)
            );
        }
        if (list.isEmpty()) {
            throw new IllegalArgumentException(where + " [of] is empty; name at least one feature");
        }
        List<String> out = new ArrayList<>(list.size());
        for (int i = 0; i < list.size(); i++) {
            if (!(list.get(i) instanceof String s) || s.isEmpty()) {
                throw new IllegalArgumentException(where + " [of][" + i + "] must be a non-empty string, got " + describe(list.get(i)));
            }
            int first = out.indexOf(s);
            if (first >= 0) {
                throw new IllegalArgumentException(
                    where + " [of] names [" + s + "] twice ([of][" + first + "] and [of][" + i + "]); count each feature once"
                );
            }
            out.add(s);
        }
        return out;
    }

    /** A count's [limits]: a non-empty array of finite numbers. {@code where} ends with the source. */
    private static List<Double> limits(Object value, String where) {
        if (value == null) {
            throw new IllegalArgumentException(where + " needs [limits]");
        }
        if (!(value instanceof List<?> list)) {
            throw new IllegalArgumentException(where + " [limits] must be an array of numbers, like [100, 50], got " + describe(value));
        }
        if (list.isEmpty()) {
            throw new IllegalArgumentException(where + " [limits] is empty; give one limit per feature of [of]");
        }
        List<Double> out = new ArrayList<>(list.size());
        for (int i = 0; i < list.size(); i++) {
            Object v = list.get(i);
            // Model documents come as ExactJson numbers (tests) or as the Numbers of an XContent map.
            double d;
            if (v instanceof ExactJson.Num n) {
                d = n.asDouble();
            } else if (v instanceof Number n) {
                d = n.doubleValue();
            } else {
                throw new IllegalArgumentException(where + " [limits][" + i + "] must be a number, got " + describe(v));
            }
            if (Double.isFinite(d) == false) {
                throw new IllegalArgumentException(where + " [limits][" + i + "] must be a finite number, got " + describe(v));
            }
            out.add(d);
        }
        return out;
    }

    /** "string rank_cf", "number 100", "array [...]": a JSON value's type and (the start of) its text. */
    private static String describe(Object value) {
        if (value == null) {
            return "null";
        }
        String text = value instanceof ExactJson.Num n ? n.text() : "".equals(value) ? "\"\"" : String.valueOf(value);
        if (text.length() > 60) {
            text = text.substring(0, 57) + "...";
        }
        String type = switch (value) {
            case String s -> "string";
            case ExactJson.Num n -> "number";
            case Number n -> "number";
            case Boolean b -> "boolean";
            case List<?> l -> "array";
            case Map<?, ?> m -> "object";
            default -> value.getClass().getSimpleName().toLowerCase(Locale.ROOT);
        };
        return type + " " + text;
    }

    /**
     * Checks what each {@code rank} feature ranks by: exactly one other feature of the list, which is
     * not a {@code rank} feature itself (ranks are computed after every other feature, in one pass).
     *
     * @return for each feature, the index of the feature it ranks by, or -1 when it is no rank feature
     */
    static int[] checkRankReferences(List<FeatureDef> features) {
        int[] of = new int[features.size()];
        for (int i = 0; i < of.length; i++) {
            FeatureDef def = features.get(i);
            of[i] = -1;
            if (def.source() != Source.RANK) {
                continue;
            }
            String where = "[plugin_features][" + i + "] (feature [" + def.name() + "]) with source [rank]";
            int target = -1;
            int count = 0;
            for (int j = 0; j < of.length; j++) {
                if (features.get(j).name().equals(def.of())) {
                    target = target < 0 ? j : target;
                    count++;
                }
            }
            if (count == 0) {
                throw new IllegalArgumentException(
                    where + " ranks by [of] = [" + def.of() + "], which is not a feature of this model; its features: "
                        + features.stream().map(FeatureDef::name).toList()
                );
            }
            if (count > 1) {
                throw new IllegalArgumentException(
                    where + " ranks by [of] = [" + def.of() + "], a name that [plugin_features] lists " + count + " times"
                );
            }
            if (target == i) {
                throw new IllegalArgumentException(where + " ranks by itself ([of] = [" + def.of() + "]); name another feature");
            }
            if (features.get(target).source() == Source.RANK) {
                throw new IllegalArgumentException(
                    where + " ranks by [of] = [" + def.of() + "], which is a rank feature itself ([plugin_features][" + target
                        + "]); a rank feature ranks by a feature of another source"
                );
            }
            if (features.get(target).source() == Source.COUNT) {
                throw new IllegalArgumentException(
                    where + " ranks by [of] = [" + def.of() + "], which is a count feature ([plugin_features][" + target
                        + "]), computed after the ranks; a rank feature ranks by a feature of another source"
                );
            }
            of[i] = target;
        }
        return of;
    }

    /**
     * Checks what each {@code count} feature counts: other features of the list, each named once in it,
     * none a {@code count} feature itself (counts are computed last, after the ranks, in one pass).
     *
     * @return for each feature, the indices of the features it counts (in the order of its {@code of}),
     *     or null when it is no count feature
     */
    static int[][] checkCountReferences(List<FeatureDef> features) {
        int[][] of = new int[features.size()][];
        for (int i = 0; i < of.length; i++) {
            FeatureDef def = features.get(i);
            if (def.source() != Source.COUNT) {
                continue;
            }
            String where = "[plugin_features][" + i + "] (feature [" + def.name() + "]) with source [count]";
            int[] targets = new int[def.countOf().size()];
            for (int k = 0; k < targets.length; k++) {
                String name = def.countOf().get(k);
                int target = -1;
                int count = 0;
                for (int j = 0; j < of.length; j++) {
                    if (features.get(j).name().equals(name)) {
                        target = target < 0 ? j : target;
                        count++;
                    }
                }
                if (count == 0) {
                    throw new IllegalArgumentException(
                        where + " counts [of] = [" + name + "], which is not a feature of this model; its features: "
                            + features.stream().map(FeatureDef::name).toList()
                    );
                }
                if (count > 1) {
                    throw new IllegalArgumentException(
                        where + " counts [of] = [" + name + "], a name that [plugin_features] lists " + count + " times"
                    );
                }
                if (target == i) {
                    throw new IllegalArgumentException(where + " counts itself ([of] = [" + name + "]); name other features");
                }
                if (features.get(target).source() == Source.COUNT) {
                    throw new IllegalArgumentException(
                        where + " counts [of] = [" + name + "], which is a count feature itself ([plugin_features][" + target
                            + "]); a count feature counts features of other sources"
                    );
                }
                targets[k] = target;
            }
            of[i] = targets;
        }
        return of;
    }

    private static String text(Map<?, ?> map, String key, String where, boolean required) {
        Object value = map.get(key);
        if (value == null) {
            if (required) {
                throw new IllegalArgumentException(where + " has no [" + key + "]");
            }
            return null;
        }
        if (value instanceof String s && s.isEmpty() == false) {
            return s;
        }
        throw new IllegalArgumentException(where + " [" + key + "] must be a non-empty string");
    }

    private static void require(String where, Source source, String value, String key) {
        if (value == null) {
            throw new IllegalArgumentException(where + " with source [" + source.jsonName() + "] needs [" + key + "]");
        }
    }

    private static void forbid(String where, Source source, String a, String aKey, String b, String bKey, String c, String cKey) {
        String[][] pairs = { { a, aKey }, { b, bKey }, { c, cKey } };
        for (String[] pair : pairs) {
            if (pair[0] != null) {
                throw new IllegalArgumentException(where + " with source [" + source.jsonName() + "] takes no [" + pair[1] + "]");
            }
        }
    }
}
