package org.vecrank.elasticsearch;

import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * Where the plugin gets one model feature: one entry of a model document's {@code plugin_features}.
 *
 * <pre>
 * {"name": "knn_score", "source": "score"}
 * {"name": "ctr", "source": "field", "field": "signals.ctr", "transform": "identity"}
 * {"name": "cos_profile", "source": "cosine", "field": "embedding", "param": "profile_vector"}
 * {"name": "cos_hist_max", "source": "cosine_max", "field": "embedding", "param": "history_vectors"}
 * {"name": "affinity.genres", "source": "overlap", "field": "genres", "param": "history_genres"}
 * {"name": "hist_len", "source": "param"}
 * </pre>
 */
public record FeatureDef(String name, Source source, String field, Transform transform, String param) {

    public enum Source {
        SCORE, FIELD, COSINE, COSINE_MAX, COSINE_MEAN, OVERLAP, PARAM;

        String jsonName() {
            return name().toLowerCase(Locale.ROOT);
        }

        boolean isCosine() {
            return this == COSINE || this == COSINE_MAX || this == COSINE_MEAN;
        }
    }

    public enum Transform {
        IDENTITY, LOG1P, DAYS_SINCE;

        String jsonName() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    static final long DAY_MS = 86_400_000L;

    public FeatureDef {
        Objects.requireNonNull(name);
        Objects.requireNonNull(source);
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
        };
    }

    private static final Set<String> KEYS = Set.of("name", "source", "field", "transform", "param");

    /** Parses entry {@code index} of {@code plugin_features}, refusing anything it does not understand. */
    static FeatureDef parse(Object raw, int index) {
        String where = "[plugin_features][" + index + "]";
        if (!(raw instanceof Map<?, ?> map)) {
            throw new IllegalArgumentException(where + " must be an object like {\"name\": ..., \"source\": ...}");
        }
        for (Object key : map.keySet()) {
            if (KEYS.contains(String.valueOf(key)) == false) {
                throw new IllegalArgumentException(where + " has unknown key [" + key + "]; known: name, source, field, transform, param");
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
                where + " has unknown source [" + sourceText + "]; known: score, field, cosine, cosine_max, cosine_mean, overlap, param"
            );
        }
        String field = text(map, "field", where, false);
        String transformText = text(map, "transform", where, false);
        String param = text(map, "param", where, false);
        Transform transform = null;
        switch (source) {
            case SCORE -> forbid(where, source, field, "field", transformText, "transform", param, "param");
            case FIELD -> {
                require(where, source, field, "field");
                forbid(where, source, param, "param", null, null, null, null);
                if (transformText == null) {
                    transform = Transform.IDENTITY;
                } else {
                    try {
                        transform = Transform.valueOf(transformText.toUpperCase(Locale.ROOT));
                    } catch (IllegalArgumentException e) {
                        throw new IllegalArgumentException(
                            where + " has unknown transform [" + transformText + "]; known: identity, log1p, days_since"
                        );
                    }
                }
            }
            case COSINE, COSINE_MAX, COSINE_MEAN, OVERLAP -> {
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
        }
        return new FeatureDef(name, source, field, transform, param);
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
