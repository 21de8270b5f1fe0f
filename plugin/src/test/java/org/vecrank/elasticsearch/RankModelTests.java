package org.vecrank.elasticsearch;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
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
            { "{\"name\": \"a\", \"source\": \"score\", \"transform\": \"abs\"}", "unknown transform [abs]; known: identity, log1p, days_since, positive" },
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
        FeatureDef match = FeatureDef.parse(ExactJson.parse("{\"name\": \"bm25\", \"source\": \"score\", \"transform\": \"positive\"}"), 0);
        assertEquals(FeatureDef.Transform.POSITIVE, match.transform());
        assertEquals(2.5, match.transform(2.5, 0));
        assertTrue(Double.isNaN(match.transform(0.0, 0)), "a query rescore's 0 (no match) reads as missing");
        assertTrue(Double.isNaN(match.transform(-1.0, 0)));
    }

    @Test
    void dotAndRankEntriesParse() {
        FeatureDef dot = FeatureDef.parse(ExactJson.parse(
            "{\"name\": \"cf_score\", \"source\": \"dot\", \"field\": \"cf_vector\", \"param\": \"cf_vector\"}"), 0);
        assertEquals(new FeatureDef("cf_score", FeatureDef.Source.DOT, "cf_vector", null, "cf_vector"), dot);
        assertEquals("dot", dot.source().jsonName());
        FeatureDef rank = FeatureDef.parse(ExactJson.parse("{\"name\": \"rank_cf\", \"source\": \"rank\", \"of\": \"cf_score\"}"), 1);
        assertEquals(new FeatureDef("rank_cf", FeatureDef.Source.RANK, null, null, null, null, "cf_score"), rank);
        assertEquals("rank", rank.source().jsonName());

        List<String> names = List.of("knn_score", "cf_score", "rank_cf");
        RankModel m = RankModel.fromSource(Trees.modelDoc(booster(names), names, List.of(
            Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "cf_score", "source", "dot", "field", "cf_vector", "param", "cf_vector"),
            Map.of("name", "rank_cf", "source", "rank", "of", "cf_score"))));
        assertEquals(rank, m.features().get(2));
        assertEquals(rank, m.firstRankFeature());
        assertNull(RankModel.fromSource(Trees.modelDoc(booster(NAMES), NAMES, features())).firstRankFeature());
        assertTrue(Arrays.equals(new int[] { -1, -1, 1 }, FeatureDef.checkRankReferences(m.features())));
        // A rank of the first-pass score is a rank too.
        assertEquals(0, FeatureDef.checkRankReferences(List.of(new FeatureDef("knn_score", FeatureDef.Source.SCORE, null, null, null),
            rankOf("r", "knn_score")))[1]);
    }

    private static FeatureDef rankOf(String name, String of) {
        return new FeatureDef(name, FeatureDef.Source.RANK, null, null, null, null, of);
    }

    @Test
    void malformedDotAndRankEntriesAreRefused() {
        String[][] cases = {
            { "{\"name\": \"d\", \"source\": \"dot\", \"param\": \"p\"}", "(feature [d]) with source [dot] needs [field]" },
            { "{\"name\": \"d\", \"source\": \"dot\", \"field\": \"v\"}", "(feature [d]) with source [dot] needs [param]" },
            { "{\"name\": \"d\", \"source\": \"dot\", \"field\": \"v\", \"param\": \"p\", \"transform\": \"log1p\"}",
                "(feature [d]) with source [dot] takes no [transform]" },
            { "{\"name\": \"d\", \"source\": \"dot\", \"field\": \"v\", \"param\": \"p\", \"key_field\": \"k\"}",
                "(feature [d]) with source [dot] takes no [key_field]" },
            { "{\"name\": \"d\", \"source\": \"dot\", \"field\": \"v\", \"param\": \"p\", \"of\": \"x\"}",
                "(feature [d]) with source [dot] takes no [of]" },
            { "{\"name\": \"d\", \"source\": \"dot\", \"field\": 3, \"param\": \"p\"}", "(feature [d]) [field] must be a non-empty string" },
            { "{\"name\": \"r\", \"source\": \"rank\"}", "(feature [r]) with source [rank] needs [of]" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": \"\"}", "(feature [r]) [of] must be a non-empty string" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": [\"x\"]}", "(feature [r]) [of] must be a non-empty string" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": \"x\", \"field\": \"f\"}", "(feature [r]) with source [rank] takes no [field]" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": \"x\", \"param\": \"p\"}", "(feature [r]) with source [rank] takes no [param]" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": \"x\", \"transform\": \"identity\"}",
                "(feature [r]) with source [rank] takes no [transform]" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": \"x\", \"key_field\": \"k\"}",
                "(feature [r]) with source [rank] takes no [key_field]" },
            { "{\"name\": \"c\", \"source\": \"cosine\", \"field\": \"e\", \"param\": \"p\", \"of\": \"x\"}",
                "(feature [c]) with source [cosine] takes no [of]" },
            { "{\"name\": \"s\", \"source\": \"score\", \"of\": \"x\"}", "(feature [s]) with source [score] takes no [of]" },
            { "{\"name\": \"r\", \"source\": \"ranks\", \"of\": \"x\"}",
                "unknown source [ranks]; known: score, field, cosine, cosine_max, cosine_mean, overlap, param, param_map, dot, rank" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"by\": \"x\"}",
                "has unknown key [by]; known: name, source, field, transform, param, key_field, of" },
        };
        for (String[] c : cases) {
            Object raw = ExactJson.parse(c[0]);
            String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.parse(raw, 3)).getMessage();
            assertTrue(msg.startsWith("[plugin_features][3] "), msg);
            assertTrue(msg.contains(c[1]), msg + " should contain " + c[1]);
        }
    }

    @Test
    void aRankMustRankAnotherFeatureThatIsNoRank() {
        List<String> names = List.of("knn_score", "cf_score", "rank_cf");
        Map<String, Object> score = Map.of("name", "knn_score", "source", "score");
        Map<String, Object> dot = Map.of("name", "cf_score", "source", "dot", "field", "cf_vector", "param", "cf_vector");
        Object[][] cases = {
            { List.of(score, dot, Map.of("name", "rank_cf", "source", "rank", "of", "cf_scor")),
                "model [m] version [2]: [plugin_features][2] (feature [rank_cf]) with source [rank] ranks by [of] = [cf_scor], "
                    + "which is not a feature of this model; its features: [knn_score, cf_score, rank_cf]" },
            { List.of(score, dot, Map.of("name", "rank_cf", "source", "rank", "of", "rank_cf")),
                "model [m] version [2]: [plugin_features][2] (feature [rank_cf]) with source [rank] ranks by itself ([of] = [rank_cf])" },
            { List.of(score, Map.of("name", "cf_score", "source", "rank", "of", "knn_score"), Map.of("name", "rank_cf", "source", "rank", "of", "cf_score")),
                "model [m] version [2]: [plugin_features][2] (feature [rank_cf]) with source [rank] ranks by [of] = [cf_score], "
                    + "which is a rank feature itself ([plugin_features][1])" },
        };
        for (Object[] c : cases) {
            @SuppressWarnings("unchecked")
            List<Map<String, Object>> features = (List<Map<String, Object>>) c[0];
            String msg = message(Trees.modelDoc(booster(names), names, features));
            assertTrue(msg.startsWith((String) c[1]), msg + " should start with " + c[1]);
        }
        // Names are not unique in a model document by themselves: an ambiguous [of] is refused too.
        String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.checkRankReferences(List.of(
            new FeatureDef("x", FeatureDef.Source.SCORE, null, null, null), new FeatureDef("x", FeatureDef.Source.PARAM, null, null, "x"),
            rankOf("r", "x")))).getMessage();
        assertEquals("[plugin_features][2] (feature [r]) with source [rank] ranks by [of] = [x], a name that [plugin_features] lists 2 times", msg);
    }

    // --- count -----------------------------------------------------------------------------------

    static final String N_SOURCES = "{\"name\": \"n_sources\", \"source\": \"count\", "
        + "\"of\": [\"rank_text\", \"rank_cf\", \"rank_cooc\", \"popular_rank\"], \"limits\": [100, 100, 50, 50]}";

    @Test
    void countEntriesParse() {
        FeatureDef count = FeatureDef.parse(ExactJson.parse(N_SOURCES), 7);
        assertEquals(FeatureDef.count("n_sources", List.of("rank_text", "rank_cf", "rank_cooc", "popular_rank"),
            List.of(100.0, 100.0, 50.0, 50.0)), count);
        assertEquals(new FeatureDef("n_sources", FeatureDef.Source.COUNT, null, null, null, null, null,
            List.of("rank_text", "rank_cf", "rank_cooc", "popular_rank"), List.of(100.0, 100.0, 50.0, 50.0)), count);
        assertEquals("count", count.source().jsonName());
        assertNull(count.of(), "a count's names are in countOf");
        // As an XContent map gives them (the registry document, the validation endpoint): Integer, Double, Long.
        FeatureDef fromMap = FeatureDef.parse(Map.of("name", "n", "source", "count", "of", List.of("a", "b", "c"),
            "limits", List.of(3, 0.1, 5_000_000_000L)), 0);
        assertEquals(List.of(3.0, 0.1, 5e9), fromMap.limits());
        assertEquals(List.of(-2.5), FeatureDef.parse(ExactJson.parse(
            "{\"name\": \"n\", \"source\": \"count\", \"of\": [\"a\"], \"limits\": [-2.5E0]}"), 0).limits());
        // The lists are copies: the entry cannot change under the plan.
        List<String> of = new ArrayList<>(List.of("a"));
        FeatureDef copied = FeatureDef.count("n", of, List.of(1.0));
        of.add("b");
        assertEquals(List.of("a"), copied.countOf());

        // A model with every kind of reference: a rank, a rank's target, a field, the first-pass score.
        List<String> names = List.of("knn_score", "n_sources", "cf_score", "rank_cf", "popular_rank");
        RankModel m = RankModel.fromSource(Trees.modelDoc(sizedBooster(names), names, List.of(
            Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "n_sources", "source", "count", "of", List.of("rank_cf", "popular_rank", "knn_score", "cf_score"),
                "limits", List.of(10, 50, 0.5, 0)),
            Map.of("name", "cf_score", "source", "dot", "field", "cf_vector", "param", "cf_vector"),
            Map.of("name", "rank_cf", "source", "rank", "of", "cf_score"),
            Map.of("name", "popular_rank", "source", "field", "field", "signals.popular_rank"))));
        assertEquals(FeatureDef.Source.COUNT, m.features().get(1).source());
        int[][] refs = FeatureDef.checkCountReferences(m.features());
        assertTrue(Arrays.equals(new int[] { 3, 4, 0, 2 }, refs[1]), Arrays.toString(refs[1]));
        assertNull(refs[0]);
        assertNull(refs[3]);
        assertTrue(Arrays.equals(new int[] { -1, -1, -1, 2, -1 }, FeatureDef.checkRankReferences(m.features())));
    }

    @Test
    void malformedCountEntriesAreRefused() {
        String c = "{\"name\": \"n\", \"source\": \"count\", ";
        String[][] cases = {
            { c + "\"limits\": [1]}", "(feature [n]) with source [count] needs [of]" },
            { c + "\"of\": null, \"limits\": [1]}", "(feature [n]) with source [count] needs [of]" },
            { c + "\"of\": [\"a\"]}", "(feature [n]) with source [count] needs [limits]" },
            { c + "\"of\": \"rank_cf\", \"limits\": [1]}",
                "(feature [n]) with source [count] [of] must be an array of feature names, like [\"rank_cf\", \"popular_rank\"], "
                    + "got string rank_cf" },
            { c + "\"of\": {\"a\": 1}, \"limits\": [1]}", "(feature [n]) with source [count] [of] must be an array of feature names" },
            { c + "\"of\": [], \"limits\": []}", "(feature [n]) with source [count] [of] is empty; name at least one feature" },
            { c + "\"of\": [\"a\", 3], \"limits\": [1, 2]}", "(feature [n]) with source [count] [of][1] must be a non-empty string, got number 3" },
            { c + "\"of\": [\"\"], \"limits\": [1]}", "(feature [n]) with source [count] [of][0] must be a non-empty string, got string \"\"" },
            { c + "\"of\": [null], \"limits\": [1]}", "(feature [n]) with source [count] [of][0] must be a non-empty string, got null" },
            { c + "\"of\": [[\"a\"]], \"limits\": [1]}", "(feature [n]) with source [count] [of][0] must be a non-empty string, got array [a]" },
            { c + "\"of\": [\"a\", \"b\", \"a\"], \"limits\": [1, 2, 3]}",
                "(feature [n]) with source [count] [of] names [a] twice ([of][0] and [of][2]); count each feature once" },
            { c + "\"of\": [\"a\"], \"limits\": 100}",
                "(feature [n]) with source [count] [limits] must be an array of numbers, like [100, 50], got number 100" },
            { c + "\"of\": [\"a\"], \"limits\": \"100\"}", "(feature [n]) with source [count] [limits] must be an array of numbers" },
            { c + "\"of\": [\"a\"], \"limits\": []}", "(feature [n]) with source [count] [limits] is empty; give one limit per feature of [of]" },
            { c + "\"of\": [\"a\", \"b\"], \"limits\": [1, \"100\"]}", "(feature [n]) with source [count] [limits][1] must be a number, got string 100" },
            { c + "\"of\": [\"a\"], \"limits\": [true]}", "(feature [n]) with source [count] [limits][0] must be a number, got boolean true" },
            { c + "\"of\": [\"a\"], \"limits\": [null]}", "(feature [n]) with source [count] [limits][0] must be a number, got null" },
            { c + "\"of\": [\"a\"], \"limits\": [[1]]}", "(feature [n]) with source [count] [limits][0] must be a number, got array [" },
            { c + "\"of\": [\"a\"], \"limits\": [1e400]}", "(feature [n]) with source [count] [limits][0] must be a finite number, got number 1e400" },
            { c + "\"of\": [\"a\", \"b\", \"c\", \"d\"], \"limits\": [100, 100, 50]}",
                "(feature [n]) with source [count] [of] and [limits] differ in length (4 and 3); give one limit per feature" },
            { c + "\"of\": [\"a\"], \"limits\": [1, 2]}", "(feature [n]) with source [count] [of] and [limits] differ in length (1 and 2)" },
            { c + "\"of\": [\"a\"], \"limits\": [1], \"field\": \"f\"}", "(feature [n]) with source [count] takes no [field]" },
            { c + "\"of\": [\"a\"], \"limits\": [1], \"param\": \"p\"}", "(feature [n]) with source [count] takes no [param]" },
            { c + "\"of\": [\"a\"], \"limits\": [1], \"transform\": \"log1p\"}", "(feature [n]) with source [count] takes no [transform]" },
            { c + "\"of\": [\"a\"], \"limits\": [1], \"key_field\": \"item_id\"}", "(feature [n]) with source [count] takes no [key_field]" },
            { c + "\"of\": [\"a\"], \"limit\": [1]}", "has unknown key [limit]; known: name, source, field, transform, param, key_field, of, limits" },
            // Every other source refuses [limits]; a rank refuses the count's form of [of].
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": \"x\", \"limits\": [1]}", "(feature [r]) with source [rank] takes no [limits]" },
            { "{\"name\": \"d\", \"source\": \"dot\", \"field\": \"v\", \"param\": \"p\", \"limits\": [1]}",
                "(feature [d]) with source [dot] takes no [limits]" },
            { "{\"name\": \"s\", \"source\": \"score\", \"limits\": []}", "(feature [s]) with source [score] takes no [limits]" },
            { "{\"name\": \"r\", \"source\": \"rank\", \"of\": [\"x\", \"y\"]}",
                "(feature [r]) [of] must be a non-empty string, the name of one feature (an array of names is the form of source [count])" },
            { "{\"name\": \"p\", \"source\": \"param\", \"of\": [\"x\"]}", "(feature [p]) with source [param] takes no [of]" },
            { "{\"name\": \"n\", \"source\": \"counts\", \"of\": [\"x\"], \"limits\": [1]}",
                "unknown source [counts]; known: score, field, cosine, cosine_max, cosine_mean, overlap, param, param_map, dot, rank, count" },
        };
        for (String[] t : cases) {
            Object raw = ExactJson.parse(t[0]);
            String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.parse(raw, 6), t[0]).getMessage();
            assertTrue(msg.startsWith("[plugin_features][6] "), msg);
            assertTrue(msg.contains(t[1]), msg + " should contain " + t[1]);
        }
        // The same refusals from an XContent map, whose numbers are Numbers.
        String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.parse(Map.of("name", "n", "source", "count",
            "of", List.of("a"), "limits", List.of(Double.POSITIVE_INFINITY)), 0)).getMessage();
        assertEquals("[plugin_features][0] (feature [n]) with source [count] [limits][0] must be a finite number, got number Infinity", msg);
        msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.parse(Map.of("name", "n", "source", "count",
            "of", List.of("a"), "limits", List.of(Double.NaN)), 0)).getMessage();
        assertTrue(msg.endsWith("[limits][0] must be a finite number, got number NaN"), msg);
    }

    @Test
    void aCountMustCountOtherFeaturesThatAreNoCounts() {
        List<String> names = List.of("knn_score", "cf_score", "rank_cf", "n_sources");
        Map<String, Object> score = Map.of("name", "knn_score", "source", "score");
        Map<String, Object> dot = Map.of("name", "cf_score", "source", "dot", "field", "cf_vector", "param", "cf_vector");
        Map<String, Object> rank = Map.of("name", "rank_cf", "source", "rank", "of", "cf_score");
        Object[][] cases = {
            { List.of(score, dot, rank, countOf("n_sources", "rank_cf", "rank_cg")),
                "model [m] version [2]: [plugin_features][3] (feature [n_sources]) with source [count] counts [of] = [rank_cg], "
                    + "which is not a feature of this model; its features: [knn_score, cf_score, rank_cf, n_sources]" },
            { List.of(score, dot, rank, countOf("n_sources", "rank_cf", "n_sources")),
                "model [m] version [2]: [plugin_features][3] (feature [n_sources]) with source [count] counts itself "
                    + "([of] = [n_sources]); name other features" },
            { List.of(score, countOf("cf_score", "knn_score"), Map.of("name", "rank_cf", "source", "rank", "of", "knn_score"),
                countOf("n_sources", "rank_cf", "cf_score")),
                "model [m] version [2]: [plugin_features][3] (feature [n_sources]) with source [count] counts [of] = [cf_score], "
                    + "which is a count feature itself ([plugin_features][1]); a count feature counts features of other sources" },
            // A rank cannot rank by a count: counts are computed after the ranks.
            { List.of(score, countOf("cf_score", "knn_score"), rank, countOf("n_sources", "knn_score")),
                "model [m] version [2]: [plugin_features][2] (feature [rank_cf]) with source [rank] ranks by [of] = [cf_score], "
                    + "which is a count feature ([plugin_features][1]), computed after the ranks; a rank feature ranks by a feature of "
                    + "another source" },
        };
        for (Object[] c : cases) {
            @SuppressWarnings("unchecked")
            List<Map<String, Object>> features = (List<Map<String, Object>>) c[0];
            String msg = message(Trees.modelDoc(sizedBooster(names), names, features));
            assertTrue(msg.startsWith((String) c[1]), msg + " should start with " + c[1]);
        }
        String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.checkCountReferences(List.of(
            new FeatureDef("x", FeatureDef.Source.SCORE, null, null, null), new FeatureDef("x", FeatureDef.Source.PARAM, null, null, "x"),
            FeatureDef.count("n", List.of("x"), List.of(1.0))))).getMessage();
        assertEquals("[plugin_features][2] (feature [n]) with source [count] counts [of] = [x], a name that [plugin_features] lists 2 times", msg);
    }

    private static String sizedBooster(List<String> names) {
        return Trees.booster("rank:ndcg", "\"5E-1\"", names.size(), names, Trees.stump(1, 0.5f, true));
    }

    /** A count of {@code of}, each with limit 1 (an XContent map, as a registry document gives it). */
    private static Map<String, Object> countOf(String name, String... of) {
        return Map.of("name", name, "source", "count", "of", List.of(of), "limits", java.util.Collections.nCopies(of.length, 1));
    }
}
