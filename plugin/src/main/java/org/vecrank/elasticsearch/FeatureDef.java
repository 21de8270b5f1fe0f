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
 * {"name": "cooc", "source": "param_map", "param": "cooc", "key_field": "item_id"}
 * </pre>
 */
public record FeatureDef(String name, Source source, String field, Transform transform, String param, String keyField) {

    public enum Source {
        SCORE, FIELD, COSINE, COSINE_MAX, COSINE_MEAN, OVERLAP, PARAM, PARAM_MAP;

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

    /** A feature of any source but {@code param_map} (no key field). */
    public FeatureDef(String name, Source source, String field, Transform transform, String param) {
        this(name, source, field, transform, param, null);
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

    private static final Set<String> KEYS = Set.of("name", "source", "field", "transform", "param", "key_field");

    /** Parses entry {@code index} of {@code plugin_features}, refusing anything it does not understand. */
    static FeatureDef parse(Object raw, int index) {
        String where = "[plugin_features][" + index + "]";
        if (!(raw instanceof Map<?, ?> map)) {
            throw new IllegalArgumentException(where + " must be an object like {\"name\": ..., \"source\": ...}");
        }
        for (Object key : map.keySet()) {
            if (KEYS.contains(String.valueOf(key)) == false) {
                throw new IllegalArgumentException(where + " has unknown key [" + key + "]; known: name, source, field, transform, param, key_field");
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
                where + " has unknown source [" + sourceText + "]; known: score, field, cosine, cosine_max, cosine_mean, overlap, param, param_map"
            );
        }
        String field = text(map, "field", where, false);
        String transformText = text(map, "transform", where, false);
        String param = text(map, "param", where, false);
        String keyField = text(map, "key_field", where, false);
        if (source != Source.PARAM_MAP && keyField != null) {
            throw new IllegalArgumentException(where + " with source [" + source.jsonName() + "] takes no [key_field]");
        }
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
            case PARAM_MAP -> {
                require(where, source, param, "param");
                require(where, source, keyField, "key_field");
                forbid(where, source, field, "field", transformText, "transform", null, null);
            }
        }
        return new FeatureDef(name, source, field, transform, param, keyField);
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
