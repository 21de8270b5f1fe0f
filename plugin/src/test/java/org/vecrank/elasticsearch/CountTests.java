package org.vecrank.elasticsearch;

import org.apache.lucene.document.Document;
import org.apache.lucene.document.KnnFloatVectorField;
import org.apache.lucene.document.SortedSetDocValuesField;
import org.apache.lucene.index.DirectoryReader;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.IndexWriterConfig;
import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.NoMergePolicy;
import org.apache.lucene.index.VectorSimilarityFunction;
import org.apache.lucene.search.Explanation;
import org.apache.lucene.search.IndexSearcher;
import org.apache.lucene.search.ScoreDoc;
import org.apache.lucene.search.TopDocs;
import org.apache.lucene.search.TotalHits;
import org.apache.lucene.store.ByteBuffersDirectory;
import org.apache.lucene.store.Directory;
import org.apache.lucene.util.BytesRef;
import org.elasticsearch.cluster.metadata.IndexMetadata;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.xcontent.XContentParser;
import org.elasticsearch.xcontent.XContentParserConfiguration;
import org.elasticsearch.xcontent.json.JsonXContent;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vecrank.elasticsearch.Trees.Node.leaf;
import static org.vecrank.elasticsearch.Trees.Node.split;

/**
 * The {@code count} source on a handcrafted index of three segments (docs 0-4, 5-8, 9-11): counts of
 * rank features (filled by the rank pass first), of plain features and of the first-pass score, every
 * expected value worked out by hand below.
 */
class CountTests {

    /**
     * The model's features, a count placed before the features it counts (the pass order does not
     * depend on the position): n_sources counts [rank_cf <= 3, rank_cooc <= 2, popular_rank <= 4];
     * n_direct counts [knn_score <= 0.75, cf_score <= 0, popular_rank <= 0.1], no rank among them.
     */
    static final List<String> NAMES = List.of("knn_score", "n_sources", "cf_score", "cooc", "popular_rank", "rank_cf", "rank_cooc",
        "n_direct");
    static final int N_SOURCES = 1;
    static final int N_DIRECT = 7;
    static final int DOCS = 12;

    /** Item ids by doc (null: none). */
    static final String[] IDS = { "p", "b", "q", "r", "a", "k", "s", "c", "t", null, "u", "v" };
    /** The first component of cf_vector by doc (NaN: no vector); with q = (1, 0, 0) it is cf_score. */
    static final float[] CF = { 2f, 5f, Float.NaN, -1f, 5f, 0f, 3f, 0f, 1f, Float.NaN, 9f, 7f };

    /**
     * The request's per-document values, as Python sends them (JSON, {@code "default": null}): cooc
     * of "r" is null and "a", "s", "v" have none (missing, the default being null); popular_rank of
     * "a" is null and "k", "t" have none (the default, 7). Doc 9 has no item_id: both missing.
     */
    static final String PARAMS = """
        {"cf_vector": [1.0, 0.0, 0.0],
         "cooc": {"values": {"p": 0.5, "b": 0.8, "q": 0.75, "r": null, "k": 0.5, "c": 0.125, "t": 0.9, "u": 1.0},
                  "default": null},
         "popular": {"values": {"p": 3, "b": 0.1, "q": 4, "r": 4.5, "a": null, "k": 0, "s": 0.0625, "c": -1, "u": 1, "v": 1},
                     "default": 7}}""";

    /** First pass: these docs in this order, scores 1 - i / 16; a window of 10 leaves docs 10 and 11 out. */
    static final int[] FIRST_PASS = { 3, 0, 7, 9, 1, 5, 8, 2, 4, 6, 10, 11 };
    static final int WINDOW = 10;

    /*
     * Worked out by hand, over the window (docs 0-9):
     *
     * rank_cf by cf_score, highest first, ties by item_id: 5 -> doc 4 "a" (1), doc 1 "b" (2); 3 -> doc 6 (3);
     *   2 -> doc 0 (4); 1 -> doc 8 (5); 0 -> doc 7 "c" (6), doc 5 "k" (7); -1 -> doc 3 (8); docs 2, 9: NaN.
     * rank_cooc by cooc: 0.9 doc 8 (1); 0.8 doc 1 (2); 0.75 doc 2 (3); 0.5 -> doc 5 "k" (4), doc 0 "p" (5);
     *   0.125 doc 7 (6); docs 3 (null), 4, 6 (absent, default null), 9 (no key): NaN.
     * popular_rank: doc 0 3, 1 0.1f, 2 4, 3 4.5, 4 NaN, 5 0, 6 0.0625, 7 -1, 8 7, 9 NaN.
     *
     * doc  rank_cf<=3  rank_cooc<=2  pop<=4   n_sources | score<=0.75  cf<=0  pop<=0.1        n_direct
     *  0   4 no        5 no          3 yes    1         | 0.9375 no    2 no   3 no            0
     *  1   2 yes       2 yes         0.1 yes  3         | 0.75 yes     5 no   0.1f no (above) 1
     *  2   NaN         3 no          4 yes    1         | 0.5625 yes   NaN    4 no            1
     *  3   8 no        NaN           4.5 no   0         | 1.0 no       -1 yes 4.5 no          1
     *  4   1 yes       NaN           NaN      1         | 0.5 yes      5 no   NaN             1
     *  5   7 no        4 no          0 yes    1         | 0.6875 yes   0 yes  0 yes           3
     *  6   3 yes       NaN           0.0625   2         | 0.4375 yes   3 no   0.0625 yes      2
     *  7   6 no        6 no          -1 yes   1         | 0.875 no     0 yes  -1 yes          2
     *  8   5 no        1 yes         7 no     1         | 0.625 yes    1 no   7 no            1
     *  9   NaN         NaN           NaN      0         | 0.8125 no    NaN    NaN             0
     *
     * popular_rank 0.1 is the float32 0.100000001..., above the limit 0.1: limits compare exactly.
     */
    static final float[] WANT_N_SOURCES = { 1, 3, 1, 0, 1, 1, 2, 1, 1, 0 };
    static final float[] WANT_N_DIRECT = { 0, 1, 1, 1, 1, 3, 2, 2, 1, 0 };

    private Directory dir;
    private DirectoryReader reader;
    private IndexSearcher searcher;

    @BeforeAll
    static void esLogging() {
        org.elasticsearch.common.logging.LogConfigurator.configureESLogging();
    }

    @BeforeEach
    void index() throws IOException {
        dir = new ByteBuffersDirectory();
        int[][] segments = { { 0, 5 }, { 5, 9 }, { 9, 12 } };
        for (int[] segment : segments) {
            try (IndexWriter w = new IndexWriter(dir, new IndexWriterConfig().setMergePolicy(NoMergePolicy.INSTANCE))) {
                for (int i = segment[0]; i < segment[1]; i++) {
                    Document d = new Document();
                    if (IDS[i] != null) {
                        d.add(new SortedSetDocValuesField("item_id", new BytesRef(IDS[i])));
                    }
                    if (Float.isNaN(CF[i]) == false) {
                        d.add(new KnnFloatVectorField("cf_vector", new float[] { CF[i], 1f, 0f }, VectorSimilarityFunction.EUCLIDEAN));
                    }
                    w.addDocument(d);
                }
                w.commit();
            }
        }
        reader = DirectoryReader.open(dir);
        assertEquals(3, reader.leaves().size());
        searcher = new IndexSearcher(reader);
    }

    @AfterEach
    void close() throws IOException {
        reader.close();
        dir.close();
    }

    /** The params as the rescore section's parser reads them ({@code XContentParser.map()}, nulls kept). */
    static Map<String, Object> json(String text) throws IOException {
        try (XContentParser p = JsonXContent.jsonXContent.createParser(XContentParserConfiguration.EMPTY, text)) {
            return p.map();
        }
    }

    static List<Map<String, Object>> features() {
        return List.of(
            Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "n_sources", "source", "count", "of", List.of("rank_cf", "rank_cooc", "popular_rank"), "limits", List.of(3, 2, 4)),
            Map.of("name", "cf_score", "source", "dot", "field", "cf_vector", "param", "cf_vector"),
            Map.of("name", "cooc", "source", "param_map", "param", "cooc", "key_field", "item_id"),
            Map.of("name", "popular_rank", "source", "param_map", "param", "popular", "key_field", "item_id"),
            Map.of("name", "rank_cf", "source", "rank", "of", "cf_score"),
            Map.of("name", "rank_cooc", "source", "rank", "of", "cooc"),
            Map.of("name", "n_direct", "source", "count", "of", List.of("knn_score", "cf_score", "popular_rank"),
                "limits", List.of(0.75, 0, 0.1)));
    }

    /** The margin is n_sources + n_direct / 8 (a missing count adds nothing): the score tells both counts. */
    static RankModel model() {
        List<String> trees = new ArrayList<>();
        for (int k = 0; k < 3; k++) {
            trees.add(Trees.tree(trees.size(), split(N_SOURCES, k + 0.5f, true, 1, 2), leaf(0f), leaf(1f)));
            trees.add(Trees.tree(trees.size(), split(N_DIRECT, k + 0.5f, true, 1, 2), leaf(0f), leaf(0.125f)));
        }
        String booster = Trees.booster("rank:ndcg", "\"0E0\"", NAMES.size(), NAMES, trees.toArray(new String[0]));
        return RankModel.fromSource(Trees.modelDoc(booster, NAMES, features()));
    }

    static float margin(float nSources, float nDirect) {
        return (Float.isNaN(nSources) ? 0f : nSources) + (Float.isNaN(nDirect) ? 0f : nDirect / 8f);
    }

    static TopDocs firstPass() {
        ScoreDoc[] docs = new ScoreDoc[FIRST_PASS.length];
        for (int i = 0; i < docs.length; i++) {
            docs[i] = new ScoreDoc(FIRST_PASS[i], firstPassScore(i));
        }
        return new TopDocs(new TotalHits(docs.length, TotalHits.Relation.EQUAL_TO), docs);
    }

    static float firstPassScore(int position) {
        return 1f - position / 16f;
    }

    static float firstPassScoreOf(int doc) {
        for (int i = 0; i < FIRST_PASS.length; i++) {
            if (FIRST_PASS[i] == doc) {
                return firstPassScore(i);
            }
        }
        throw new AssertionError(doc);
    }

    static Set<Integer> window() {
        Set<Integer> out = new HashSet<>();
        for (int i = 0; i < WINDOW; i++) {
            out.add(FIRST_PASS[i]);
        }
        return out;
    }

    static String line(Explanation e, int feature) {
        return e.getDetails()[1].getDetails()[feature].getDescription();
    }

    static String expectedLine(String name, float value) {
        return Float.isNaN(value) ? "feature [" + name + "] = NaN (missing) (float32 0x7fc00000)"
            : "feature [" + name + "] = " + value + " " + VecrankRescorer.bits(value);
    }

    private VecrankRescorer.Context context(RankModel model, Map<String, Object> params) {
        return new VecrankRescorer.Context(WINDOW, model, new FeaturePlan(model, params, null));
    }

    private Explanation explain(VecrankRescorer.Context ctx, int doc) throws IOException {
        return VecrankRescorer.INSTANCE.explain(doc, searcher, ctx, Explanation.match(firstPassScoreOf(doc), "first pass"));
    }

    // --- the rescore -----------------------------------------------------------------------------

    @Test
    void theRescoreCountsRanksAndValuesWorkedOutByHand() throws IOException {
        RankModel model = model();
        VecrankRescorer.Context ctx = context(model, json(PARAMS));
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < WINDOW; i++) {
            ScoreDoc hit = out.scoreDocs[i];
            assertEquals(Scores.toScore(margin(WANT_N_SOURCES[hit.doc], WANT_N_DIRECT[hit.doc])), hit.score, "doc " + hit.doc);
            order.add(hit.doc);
        }
        // margins: doc 1 3.125, 6 2.25, 5 1.375, 7 1.25, 4 "a", 2 "q", 8 "t" 1.125 (by item id), 0 1, 3 0.125, 9 0
        assertEquals(List.of(1, 6, 5, 7, 4, 2, 8, 0, 3, 9), order);
        assertEquals(List.of(10, 11), List.of(out.scoreDocs[10].doc, out.scoreDocs[11].doc), "past the window, in first-pass order");
    }

    @Test
    void theSecondPassFillsCountsAfterRanks() throws IOException {
        // The rows the rescore computes, read back through the plan's own passes.
        RankModel model = model();
        FeaturePlan plan = new FeaturePlan(model, json(PARAMS), null);
        assertTrue(plan.hasRanks());
        assertTrue(plan.hasCounts());
        assertEquals(List.of(N_SOURCES, N_DIRECT), java.util.Arrays.stream(plan.countColumns()).boxed().toList());
        assertEquals(List.of(5, 6, 4), java.util.Arrays.stream(plan.countOfColumns(0)).boxed().toList());
        int width = plan.size();
        int[] docs = window().stream().mapToInt(Integer::intValue).sorted().toArray();
        float[] rows = new float[docs.length * width];
        BytesRef[] keys = new BytesRef[docs.length];
        FeaturePlan.Extractor extractor = plan.open();
        int i = 0;
        for (LeafReaderContext leaf : reader.leaves()) {
            extractor.setNextReader(leaf);
            for (; i < docs.length && docs[i] < leaf.docBase + leaf.reader().maxDoc(); i++) {
                extractor.extract(docs[i] - leaf.docBase, firstPassScoreOf(docs[i]), rows, i * width);
                keys[i] = extractor.tieKey(docs[i] - leaf.docBase);
                assertTrue(Float.isNaN(rows[i * width + N_SOURCES]) && Float.isNaN(rows[i * width + N_DIRECT]),
                    "a count's place holds NaN until the second pass");
            }
        }
        plan.rank(rows, docs.length, keys);
        plan.count(rows, docs.length);
        float[] rankCf = { 4, 2, Float.NaN, 8, 1, 7, 3, 6, 5, Float.NaN };
        float[] rankCooc = { 5, 2, 3, Float.NaN, Float.NaN, 4, Float.NaN, 6, 1, Float.NaN };
        float[] popular = { 3, 0.1f, 4, 4.5f, Float.NaN, 0, 0.0625f, -1, 7, Float.NaN };
        for (int r = 0; r < docs.length; r++) {
            int doc = docs[r];
            assertEquals(rankCf[doc], rows[r * width + 5], "rank_cf of doc " + doc);
            assertEquals(rankCooc[doc], rows[r * width + 6], "rank_cooc of doc " + doc);
            assertEquals(popular[doc], rows[r * width + 4], "popular_rank of doc " + doc);
            assertEquals(WANT_N_SOURCES[doc], rows[r * width + N_SOURCES], "n_sources of doc " + doc);
            assertEquals(WANT_N_DIRECT[doc], rows[r * width + N_DIRECT], "n_direct of doc " + doc);
        }
    }

    // --- NaN -------------------------------------------------------------------------------------

    @Test
    void aNaNValueNeverCountsAndACountIsNeverMissing() {
        // Rows of the model's width; only the counted columns matter (knn_score 0, cf_score 2, popular_rank 4,
        // rank_cf 5, rank_cooc 6). n_direct's limits: knn_score <= 0.75, cf_score <= 0, popular_rank <= 0.1.
        FeaturePlan plan = new FeaturePlan(model(), Map.of(), null);
        int width = plan.size();
        float[][] cases = {
            // knn, cf, pop: want n_direct
            { Float.NaN, Float.NaN, Float.NaN, 0 },
            { 0.75f, -0f, 0.1f, 2 },                                      // equal counts, -0 <= 0; 0.1f is above 0.1
            { Math.nextDown(0.75f), Float.MIN_VALUE, Math.nextDown(0.1f), 2 }, // the float32 below 0.1f counts; MIN_VALUE > 0
            { Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, 3 },
            { Float.POSITIVE_INFINITY, Float.POSITIVE_INFINITY, Float.POSITIVE_INFINITY, 0 },
            { Float.NaN, -1f, Float.NaN, 1 },
        };
        float[] rows = new float[cases.length * width];
        for (int i = 0; i < cases.length; i++) {
            java.util.Arrays.fill(rows, i * width, (i + 1) * width, Float.NaN); // ranks NaN too: n_sources counts only popular_rank
            rows[i * width] = cases[i][0];
            rows[i * width + 2] = cases[i][1];
            rows[i * width + 4] = cases[i][2];
        }
        plan.count(rows, cases.length);
        for (int i = 0; i < cases.length; i++) {
            assertEquals(cases[i][3], rows[i * width + N_DIRECT], "case " + i);
            float pop = cases[i][2];
            assertEquals(Float.isNaN(pop) == false && pop <= 4 ? 1f : 0f, rows[i * width + N_SOURCES], "case " + i);
        }
        assertTrue(0.1f > 0.1, "the float32 0.1 is above the double 0.1: the limit is compared exactly");
    }

    @Test
    void withoutParamsOnlyTheFirstPassScoreCounts() throws IOException {
        // No vector, no maps: every counted feature is NaN but knn_score; ranks are NaN, counts are not.
        RankModel model = model();
        VecrankRescorer.Context ctx = context(model, Map.of());
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        for (int i = 0; i < WINDOW; i++) {
            ScoreDoc hit = out.scoreDocs[i];
            float direct = firstPassScoreOf(hit.doc) <= 0.75f ? 1f : 0f;
            assertEquals(Scores.toScore(margin(0f, direct)), hit.score, "doc " + hit.doc);
            Explanation e = explain(ctx, hit.doc);
            assertEquals(expectedLine("n_sources", 0f), line(e, N_SOURCES), "doc " + hit.doc);
            assertEquals(expectedLine("n_direct", direct), line(e, N_DIRECT), "doc " + hit.doc);
            assertEquals(expectedLine("rank_cf", Float.NaN), line(e, 5));
        }
        // first_pass_missing: the score is NaN too, so nothing counts.
        VecrankRescorer.Context ids = context(model, Map.of(QueryParams.FIRST_PASS_MISSING, true));
        TopDocs none = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ids);
        for (int i = 0; i < WINDOW; i++) {
            assertEquals(Scores.toScore(0f), none.scoreDocs[i].score);
            assertEquals(expectedLine("n_direct", 0f), line(explain(ids, none.scoreDocs[i].doc), N_DIRECT));
        }
    }

    // --- explain ---------------------------------------------------------------------------------

    @Test
    void explainReportsTheCountsTheRescoreUsed() throws IOException {
        RankModel model = model();
        VecrankRescorer.Context ctx = context(model, json(PARAMS));
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        Map<Integer, Float> scores = new HashMap<>();
        for (ScoreDoc hit : out.scoreDocs) {
            scores.put(hit.doc, hit.score);
        }
        // In the rescore's own context (a search of one shard) and in a fetch context of its own, which
        // recomputes the ranks from the window's doc ids: the counts, and the scores, are the rescore's.
        VecrankRescorer.Context fetch = context(model, json(PARAMS));
        fetch.setRescoredDocs(window());
        for (VecrankRescorer.Context c : List.of(ctx, fetch)) {
            for (int doc = 0; doc < WINDOW; doc++) {
                Explanation e = explain(c, doc);
                assertEquals(expectedLine("n_sources", WANT_N_SOURCES[doc]), line(e, N_SOURCES), "doc " + doc);
                assertEquals(expectedLine("n_direct", WANT_N_DIRECT[doc]), line(e, N_DIRECT), "doc " + doc);
                assertEquals(scores.get(doc), e.getValue().floatValue(), "doc " + doc);
            }
            assertTrue(explain(c, 10).getDescription().startsWith("not rescored by vecrank model [m] version [2]"));
        }
    }

    @Test
    void withoutAWindowACountOfARankIsNotKnownAndACountOfValuesIs() throws IOException {
        RankModel model = model();
        VecrankRescorer.Context none = context(model, json(PARAMS));
        for (int doc = 0; doc < WINDOW; doc++) {
            Explanation e = explain(none, doc);
            assertEquals("feature [n_sources] = NaN (missing) (float32 0x7fc00000) " + VecrankRescorer.countUnknown("rank_cf"),
                line(e, N_SOURCES), "doc " + doc);
            assertEquals("feature [rank_cf] = NaN (missing) (float32 0x7fc00000) " + VecrankRescorer.RANK_UNKNOWN_WINDOW, line(e, 5));
            // n_direct reads the row only: the value the rescore used.
            assertEquals(expectedLine("n_direct", WANT_N_DIRECT[doc]), line(e, N_DIRECT), "doc " + doc);
            assertEquals(Scores.toScore(margin(Float.NaN, WANT_N_DIRECT[doc])), e.getValue().floatValue(), "the model took the NaN");
        }
        assertEquals("[count not known to this explanation: it counts [rank_cf], whose rank is not known to it]",
            VecrankRescorer.countUnknown("rank_cf"));
    }

    /** knn_score, rank_knn (its rank), top2 (rank_knn <= 2); the margin is top2. */
    private static RankModel rankOfScoreModel() {
        List<String> names = List.of("knn_score", "rank_knn", "top2");
        String booster = Trees.booster("rank:ndcg", "\"0E0\"", 3, names, Trees.tree(0, split(2, 0.5f, true, 1, 2), leaf(0f), leaf(1f)));
        return RankModel.fromSource(Trees.modelDoc(booster, names, List.of(
            Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "rank_knn", "source", "rank", "of", "knn_score"),
            Map.of("name", "top2", "source", "count", "of", List.of("rank_knn"), "limits", List.of(2)))));
    }

    @Test
    void aCountOfARankOfTheFirstPassScoreIsKnownWhereTheScoresAre() throws IOException {
        RankModel model = rankOfScoreModel();
        VecrankRescorer.Context ctx = context(model, Map.of());
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        assertEquals(List.of(0, 3), List.of(out.scoreDocs[0].doc, out.scoreDocs[1].doc), "the two best first-pass scores, by doc id");
        for (int i = 0; i < WINDOW; i++) {
            int doc = FIRST_PASS[i];
            float top2 = i < 2 ? 1f : 0f;
            assertEquals(expectedLine("top2", top2), line(explain(ctx, doc), 2), "doc " + doc);
            assertEquals(Scores.toScore(top2), explain(ctx, doc).getValue().floatValue());
        }
        VecrankRescorer.Context fetch = context(model, Map.of());
        fetch.setRescoredDocs(window());
        Explanation e = explain(fetch, 3);
        assertEquals("feature [rank_knn] = NaN (missing) (float32 0x7fc00000) " + VecrankRescorer.RANK_UNKNOWN_FIRST_PASS, line(e, 1));
        assertEquals("feature [top2] = NaN (missing) (float32 0x7fc00000) " + VecrankRescorer.countUnknown("rank_knn"), line(e, 2));
        assertEquals(Scores.toScore(0f), e.getValue().floatValue());
    }

    // --- shards ----------------------------------------------------------------------------------

    private static IndexSettings settings(int shards) {
        IndexMetadata metadata = IndexMetadata.builder("items")
            .settings(Settings.builder()
                .put(IndexMetadata.SETTING_VERSION_CREATED, IndexVersion.current())
                .put(IndexMetadata.SETTING_NUMBER_OF_SHARDS, shards)
                .put(IndexMetadata.SETTING_NUMBER_OF_REPLICAS, 0))
            .build();
        return new IndexSettings(metadata, Settings.EMPTY);
    }

    @Test
    void aCountOfValuesAloneRescoresIndicesOfSeveralShards() {
        // Its value is the doc's own: no shard dependence. A model that counts ranks has ranks, refused as before.
        List<String> names = List.of("knn_score", "n");
        String booster = Trees.booster("rank:ndcg", "\"0E0\"", 2, names, Trees.tree(0, leaf(0f)));
        RankModel values = RankModel.fromSource(Trees.modelDoc(booster, names, List.of(Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "n", "source", "count", "of", List.of("knn_score"), "limits", List.of(0.5)))));
        FeaturePlan.checkShards(values, settings(3));
        String msg = assertThrows(IllegalArgumentException.class, () -> FeaturePlan.checkShards(model(), settings(2))).getMessage();
        assertTrue(msg.startsWith("model [m] version [2] has feature [rank_cf] of source [rank], which ranks within one shard's"), msg);
    }
}
