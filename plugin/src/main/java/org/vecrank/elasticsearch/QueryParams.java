package org.vecrank.elasticsearch;

import org.apache.lucene.util.BytesRef;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;

/**
 * The request's {@code params}, read into the shapes features need.
 *
 * <ul>
 *   <li>scalars: a number (or boolean, 1/0); absent or null is NaN;</li>
 *   <li>vectors: a JSON array of numbers, or a base64 string of little-endian float32;</li>
 *   <li>vector lists: a JSON array of vectors in either form;</li>
 *   <li>overlap sets: {@code {"sets": [[value, ...], ...], "weights": [w, ...]}};</li>
 *   <li>per-document values: {@code {"values": {"<key>": number or null, ...}, "default": number or null}};</li>
 *   <li>{@code now_ms}: the instant {@code days_since} counts from (default: the search's now).</li>
 * </ul>
 */
final class QueryParams {

    static final String NOW_MS = "now_ms";
    /** True when the hits' first-pass scores are not a retrieval score (an ids lookup): the score source is then NaN. */
    static final String FIRST_PASS_MISSING = "first_pass_missing";

    /** Sets of keyword values with one weight each. */
    record Overlap(List<BytesRef[]> sets, double[] weights, double total) {}

    /**
     * A value per document key: {@code values} as the request holds them, keys and values checked by
     * {@link #paramMap} (null: NaN), and the value of a key that {@code values} lacks
     * ({@code defaultValue}, NaN for null or absent). A document's value is looked up by its key's
     * text, so that the request's keys are never turned into Lucene terms (900 keys of three maps
     * cost more to convert than the 450 documents' lookups).
     */
    record ParamMap(Map<String, Object> values, double defaultValue) {
        private static final Object ABSENT = new Object();

        /** The value for a document's key: the number given, NaN for a null one, the default for a key the values lack. */
        double get(String key) {
            Object v = values.getOrDefault(key, ABSENT);
            if (v == ABSENT) {
                return defaultValue;
            }
            return v == null ? Double.NaN : ((Number) v).doubleValue();
        }
    }

    private final Map<String, Object> raw;

    QueryParams(Map<String, Object> raw) {
        this.raw = raw == null ? Map.of() : raw;
    }

    double scalar(String name) {
        Object value = raw.get(name);
        if (value == null) {
            return Double.NaN;
        }
        if (value instanceof Number n) {
            return n.doubleValue();
        }
        if (value instanceof Boolean b) {
            return b ? 1.0 : 0.0;
        }
        throw new IllegalArgumentException("[params." + name + "] must be a number, got " + describe(value));
    }

    /** A true/false param; absent or null is false. */
    boolean flag(String name) {
        Object value = raw.get(name);
        if (value == null) {
            return false;
        }
        if (value instanceof Boolean b) {
            return b;
        }
        throw new IllegalArgumentException("[params." + name + "] must be true or false, got " + describe(value));
    }

    long nowMs(long fallback) {
        Object value = raw.get(NOW_MS);
        if (value == null) {
            return fallback;
        }
        if (value instanceof Number n && Double.isFinite(n.doubleValue())) {
            return n.longValue();
        }
        throw new IllegalArgumentException("[params." + NOW_MS + "] must be epoch milliseconds, got " + describe(value));
    }

    /** One vector, or null when the param is absent or empty. */
    float[] vector(String name) {
        Object value = raw.get(name);
        if (value == null) {
            return null;
        }
        float[] v = toVector(value, "[params." + name + "]");
        return v.length == 0 ? null : v;
    }

    /** A list of vectors, or null when the param is absent or empty. */
    List<float[]> vectors(String name) {
        Object value = raw.get(name);
        if (value == null) {
            return null;
        }
        if (!(value instanceof List<?> list)) {
            throw new IllegalArgumentException("[params." + name + "] must be an array of vectors, got " + describe(value));
        }
        List<float[]> out = new ArrayList<>(list.size());
        for (int i = 0; i < list.size(); i++) {
            float[] v = toVector(list.get(i), "[params." + name + "][" + i + "]");
            if (v.length > 0) {
                out.add(v);
            }
        }
        return out.isEmpty() ? null : out;
    }

    /** Overlap sets, or null when the param is absent. */
    Overlap overlap(String name) {
        Object value = raw.get(name);
        if (value == null) {
            return null;
        }
        String where = "[params." + name + "]";
        if (!(value instanceof Map<?, ?> map)) {
            throw new IllegalArgumentException(where + " must be {\"sets\": [[...], ...], \"weights\": [...]}, got " + describe(value));
        }
        for (Object key : map.keySet()) {
            if ("sets".equals(key) == false && "weights".equals(key) == false) {
                throw new IllegalArgumentException(where + " has unknown key [" + key + "]; known: sets, weights");
            }
        }
        Object rawSets = map.get("sets");
        Object rawWeights = map.get("weights");
        if (!(rawSets instanceof List<?> sets)) {
            throw new IllegalArgumentException(where + " needs [sets], an array of arrays of values");
        }
        if (!(rawWeights instanceof List<?> weights)) {
            throw new IllegalArgumentException(where + " needs [weights], an array of numbers");
        }
        if (sets.size() != weights.size()) {
            throw new IllegalArgumentException(
                where + " has " + sets.size() + " sets but " + weights.size() + " weights; give one weight per set"
            );
        }
        List<BytesRef[]> outSets = new ArrayList<>(sets.size());
        double[] w = new double[sets.size()];
        double total = 0;
        for (int i = 0; i < sets.size(); i++) {
            Object s = sets.get(i);
            if (!(s instanceof List<?> values)) {
                throw new IllegalArgumentException(where + "[sets][" + i + "] must be an array of values");
            }
            BytesRef[] refs = new BytesRef[values.size()];
            for (int j = 0; j < refs.length; j++) {
                Object v = values.get(j);
                if (v instanceof String str) {
                    refs[j] = new BytesRef(str);
                } else if (v instanceof Integer || v instanceof Long || v instanceof Boolean) {
                    refs[j] = new BytesRef(String.valueOf(v));
                } else {
                    throw new IllegalArgumentException(where + "[sets][" + i + "][" + j + "] must be a string, got " + describe(v));
                }
            }
            outSets.add(refs);
            Object wi = weights.get(i);
            if (!(wi instanceof Number n) || Double.isFinite(n.doubleValue()) == false || n.doubleValue() < 0) {
                throw new IllegalArgumentException(where + "[weights][" + i + "] must be a finite number >= 0, got " + describe(wi));
            }
            w[i] = n.doubleValue();
            total += w[i];
        }
        return new Overlap(outSets, w, total);
    }

    /** Per-document values keyed by a keyword, or null when the param is absent or null. */
    ParamMap paramMap(String name) {
        Object value = raw.get(name);
        if (value == null) {
            return null;
        }
        String where = "[params." + name + "]";
        if (!(value instanceof Map<?, ?> map)) {
            throw new IllegalArgumentException(
                where + " must be {\"values\": {\"<key>\": number, ...}, \"default\": number or null}, got " + describe(value)
            );
        }
        for (Object key : map.keySet()) {
            if ("values".equals(key) == false && "default".equals(key) == false) {
                throw new IllegalArgumentException(where + " has unknown key [" + key + "]; known: values, default");
            }
        }
        if (!(map.get("values") instanceof Map<?, ?> values)) {
            throw new IllegalArgumentException(
                where + " needs [values], an object of document keys to numbers, got " + describe(map.get("values"))
            );
        }
        for (Map.Entry<?, ?> e : values.entrySet()) {
            if (!(e.getKey() instanceof String key)) {
                throw new IllegalArgumentException(where + "[values] keys must be strings, got " + describe(e.getKey()));
            }
            Object v = e.getValue();
            if (v != null && !(v instanceof Number n && Double.isFinite(n.doubleValue()))) {
                mapNumber(v, where + "[values][" + key + "]"); // throws, naming the key
            }
        }
        double defaultValue = mapNumber(map.get("default"), where + "[default]");
        @SuppressWarnings("unchecked") // every key was just checked to be a string
        Map<String, Object> checked = (Map<String, Object>) values;
        return new ParamMap(checked, defaultValue);
    }

    /** A number of a param map: finite, or null for missing (NaN); booleans, strings and the rest are refused. */
    private static double mapNumber(Object value, String where) {
        if (value == null) {
            return Double.NaN;
        }
        if (value instanceof Number n) {
            double d = n.doubleValue();
            if (Double.isFinite(d) == false) {
                throw new IllegalArgumentException(where + " must be a finite number or null, got " + d);
            }
            return d;
        }
        throw new IllegalArgumentException(where + " must be a number or null, got " + describe(value));
    }

    static float[] toVector(Object value, String where) {
        if (value instanceof String s) {
            return decodeBase64(s, where);
        }
        if (value instanceof List<?> list) {
            float[] v = new float[list.size()];
            for (int i = 0; i < v.length; i++) {
                Object x = list.get(i);
                if (!(x instanceof Number n)) {
                    throw new IllegalArgumentException(where + "[" + i + "] must be a number, got " + describe(x));
                }
                v[i] = n.floatValue();
                if (Float.isFinite(v[i]) == false) {
                    throw new IllegalArgumentException(where + "[" + i + "] is not finite");
                }
            }
            return v;
        }
        throw new IllegalArgumentException(where + " must be an array of numbers or a base64 string of float32, got " + describe(value));
    }

    static float[] decodeBase64(String text, String where) {
        byte[] bytes;
        try {
            bytes = Base64.getDecoder().decode(text);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + " is not valid base64: " + e.getMessage());
        }
        if (bytes.length % Float.BYTES != 0) {
            throw new IllegalArgumentException(where + " decodes to " + bytes.length + " bytes, not a whole number of float32 values");
        }
        float[] v = new float[bytes.length / Float.BYTES];
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(v);
        for (int i = 0; i < v.length; i++) {
            if (Float.isFinite(v[i]) == false) {
                throw new IllegalArgumentException(where + "[" + i + "] is not finite");
            }
        }
        return v;
    }

    private static String describe(Object value) {
        String text = String.valueOf(value);
        if (text.length() > 60) {
            text = text.substring(0, 57) + "...";
        }
        return value == null ? "null" : value.getClass().getSimpleName().toLowerCase(java.util.Locale.ROOT) + " " + text;
    }
}
