package org.vecrank.elasticsearch;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class RankModelTests {

    static final List<String> NAMES = List.of("knn_score", "ctr", "hist_len");

    static List<Map<String, Object>> features() {
        return new ArrayList<>(List.of(
            Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "ctr", "source", "field", "field", "signals.ctr", "transform", "identity"),
            Map.of("name", "hist_len", "source", "param")
        ));
    }

    static String booster(List<String> names) {
        return Trees.booster("rank:ndcg", "\"5E-1\"", 3, names, Trees.stump(1, 0.5f, true));
    }

    private static String message(Map<String, Object> doc) {
        return assertThrows(IllegalArgumentException.class, () -> RankModel.fromSource(doc)).getMessage();
    }

    @Test
    void aValidDocumentParses() {
        RankModel m = RankModel.fromSource(Trees.modelDoc(booster(NAMES), NAMES, features()));
        assertEquals("m", m.modelId());
        assertEquals(2, m.version());
        assertEquals("rank:ndcg", m.objective());
        assertEquals(FeatureDef.Source.SCORE, m.features().get(0).source());
        assertEquals(FeatureDef.Transform.IDENTITY, m.features().get(1).transform());
        assertEquals("hist_len", m.features().get(2).param(), "a param feature reads params[name] by default");
        assertNull(m.features().get(0).field());
    }

    @Test
    void pluginFeaturesMustNameTheSpecInOrder() {
        List<Map<String, Object>> swapped = features();
        java.util.Collections.swap(swapped, 1, 2);
        String msg = message(Trees.modelDoc(booster(NAMES), NAMES, swapped));
        assertTrue(msg.contains("model [m] version [2] [plugin_features] names [knn_score, hist_len, ctr] differ from [spec.names]"), msg);
        List<Map<String, Object>> fewer = features().subList(0, 2);
        assertTrue(message(Trees.modelDoc(booster(NAMES), NAMES, fewer)).contains("differ from [spec.names]"));
        Map<String, Object> none = Trees.modelDoc(booster(NAMES), NAMES, features());
        none.remove("plugin_features");
        assertTrue(message(none).contains("has no [plugin_features]"));
    }

    @Test
    void theBoosterMustAgreeWithTheSpec() {
        assertTrue(message(Trees.modelDoc(booster(List.of("knn_score", "ctr", "other")), NAMES, features()))
            .contains("booster feature names [knn_score, ctr, other] differ"));
        List<String> four = List.of("knn_score", "ctr", "hist_len", "x");
        List<Map<String, Object>> fourFeatures = features();
        fourFeatures.add(Map.of("name", "x", "source", "param"));
        assertTrue(message(Trees.modelDoc(booster(null), four, fourFeatures)).contains("booster has 3 features but [spec.names] lists 4"));
        Map<String, Object> doc = Trees.modelDoc(booster(NAMES), NAMES, features());
        doc.put("objective", "binary:logistic");
        assertTrue(message(doc).contains("[objective] is [binary:logistic] but the booster's objective is [rank:ndcg]"));
        doc = Trees.modelDoc("{not json", NAMES, features());
        assertTrue(message(doc).startsWith("model [m] version [2]: [booster] is not valid JSON"));
    }

    @Test
    void featureDefinitionsAreCheckedStrictly() {
        String[][] cases = {
            { "{\"name\": \"a\", \"source\": \"magic\"}", "unknown source [magic]" },
            { "{\"name\": \"a\", \"source\": \"field\"}", "needs [field]" },
            { "{\"name\": \"a\", \"source\": \"field\", \"field\": \"f\", \"transform\": \"sqrt\"}", "unknown transform [sqrt]" },
            { "{\"name\": \"a\", \"source\": \"cosine\", \"field\": \"e\"}", "needs [param]" },
            { "{\"name\": \"a\", \"source\": \"overlap\", \"param\": \"p\"}", "needs [field]" },
            { "{\"name\": \"a\", \"source\": \"score\", \"field\": \"f\"}", "takes no [field]" },
            { "{\"name\": \"a\", \"source\": \"param\", \"transform\": \"log1p\"}", "takes no [transform]" },
            { "{\"name\": \"a\", \"source\": \"score\", \"weight\": 2}", "unknown key [weight]" },
            { "{\"source\": \"score\"}", "has no [name]" },
        };
        for (String[] c : cases) {
            Object raw = ExactJson.parse(c[0]);
            String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.parse(raw, 4)).getMessage();
            assertTrue(msg.contains(c[1]), msg + " should contain " + c[1]);
            assertTrue(msg.startsWith("[plugin_features][4]"), msg);
        }
    }

    @Test
    void transformsComputeInDouble() {
        FeatureDef log = new FeatureDef("p", FeatureDef.Source.FIELD, "f", FeatureDef.Transform.LOG1P, null);
        assertEquals(Math.log1p(3.0), log.transform(3.0, 0));
        assertEquals(0.0, log.transform(-5.0, 0), "negative values are clipped to 0 before log1p");
        assertTrue(Double.isNaN(log.transform(Double.NaN, 0)));
        FeatureDef days = new FeatureDef("d", FeatureDef.Source.FIELD, "f", FeatureDef.Transform.DAYS_SINCE, null);
        assertEquals(1.5, days.transform(1_000_000_000_000.0, 1_000_000_000_000L + 129_600_000L));
    }
}
