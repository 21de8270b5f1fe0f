package org.vecrank.elasticsearch;

import org.apache.lucene.document.Document;
import org.apache.lucene.document.KnnFloatVectorField;
import org.apache.lucene.document.StringField;
import org.apache.lucene.index.DirectoryReader;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.IndexWriterConfig;
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
import org.elasticsearch.tasks.TaskCancelledException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vecrank.elasticsearch.Trees.Node.leaf;
import static org.vecrank.elasticsearch.Trees.Node.split;

/** The rescoring loop on a real Lucene index of several segments (features that need no mapping). */
class VecrankRescorerTests {

    static final List<String> NAMES = List.of("knn_score", "cos_profile", "hist_len");
    static final int DOCS = 40;

    private Directory dir;
    private DirectoryReader reader;
    private IndexSearcher searcher;
    private final Map<Integer, float[]> vectors = new HashMap<>();

    @org.junit.jupiter.api.BeforeAll
    static void esLogging() {
        // Elasticsearch's vector formats (registered with Lucene's SPI) log through ES logging.
        org.elasticsearch.common.logging.LogConfigurator.configureESLogging();
    }

    @BeforeEach
    void index() throws IOException {
        dir = new ByteBuffersDirectory();
        Random random = new Random(42);
        try (IndexWriter w = new IndexWriter(dir, new IndexWriterConfig().setMergePolicy(NoMergePolicy.INSTANCE))) {
            for (int i = 0; i < DOCS; i++) {
                Document d = new Document();
                d.add(new StringField("id", Integer.toString(i), StringField.Store.NO));
                if (i % 7 != 3) { // some documents have no vector
                    float[] v = { (float) random.nextGaussian(), (float) random.nextGaussian(), (float) random.nextGaussian() };
                    d.add(new KnnFloatVectorField("embedding", v, VectorSimilarityFunction.EUCLIDEAN));
                    vectors.put(i, v);
                }
                w.addDocument(d);
                if (i % 13 == 12) {
                    w.commit(); // several segments
                }
            }
        }
        reader = DirectoryReader.open(dir);
        assertTrue(reader.leaves().size() > 1);
        searcher = new IndexSearcher(reader);
    }

    @AfterEach
    void close() throws IOException {
        reader.close();
        dir.close();
    }

    private static RankModel model() {
        String byCos = Trees.tree(0, split(1, 0.25f, true, 1, 2), leaf(-1f), leaf(2f)); // missing cosine -> left
        String byScore = Trees.tree(1, split(0, 0.3f, false, 1, 2), leaf(0.5f), leaf(0f));
        String byParam = Trees.tree(2, split(2, 1f, true, 1, 2), leaf(0f), leaf(0.125f));
        String booster = Trees.booster("rank:ndcg", "\"5E-1\"", 3, NAMES, byCos, byScore, byParam);
        List<Map<String, Object>> features = List.of(
            Map.of("name", "knn_score", "source", "score"),
            Map.of("name", "cos_profile", "source", "cosine", "field", "embedding", "param", "profile_vector"),
            Map.of("name", "hist_len", "source", "param")
        );
        return RankModel.fromSource(Trees.modelDoc(booster, NAMES, features));
    }

    private static final float[] PROFILE = { 1f, 0.5f, -0.25f };

    private static double cosine(float[] a, float[] b) {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.length; i++) {
            dot += (double) a[i] * b[i];
            na += (double) a[i] * a[i];
            nb += (double) b[i] * b[i];
        }
        return dot / (Math.sqrt(na) * Math.sqrt(nb));
    }

    /** What the model should say about doc {@code doc} with first-pass {@code score}, computed here independently. */
    private float expected(int doc, float score, double histLen) {
        float[] v = vectors.get(doc);
        float cos = v == null ? Float.NaN : (float) cosine(v, PROFILE);
        float m = 0.5f;
        m += (Float.isNaN(cos) || cos < 0.25f) ? -1f : 2f;
        m += score < 0.3f ? 0.5f : 0f;
        m += (float) histLen < 1f ? 0f : 0.125f;
        return Scores.toScore(m);
    }

    private VecrankRescorer.Context context(int window, Map<String, Object> params) {
        RankModel model = model();
        return new VecrankRescorer.Context(window, model, new FeaturePlan(model, params, null));
    }

    /** First-pass hits in score order: doc ids shuffled, scores decreasing. */
    private TopDocs firstPass() {
        List<Integer> ids = new ArrayList<>();
        for (int i = 0; i < DOCS; i++) {
            ids.add(i);
        }
        java.util.Collections.shuffle(ids, new Random(7));
        ScoreDoc[] docs = new ScoreDoc[DOCS];
        for (int i = 0; i < DOCS; i++) {
            docs[i] = new ScoreDoc(ids.get(i), 1f - i / (float) DOCS);
        }
        return new TopDocs(new TotalHits(DOCS, TotalHits.Relation.EQUAL_TO), docs);
    }

    @Test
    void rescoresTheWindowAndKeepsTheRestAfterItInOrder() throws IOException {
        int window = 25;
        Map<String, Object> params = Map.of("profile_vector", List.of(1.0, 0.5, -0.25), "hist_len", 1.5);
        TopDocs in = firstPass();
        Map<Integer, Float> firstScores = new HashMap<>();
        List<Integer> pastOrder = new ArrayList<>();
        for (int i = 0; i < DOCS; i++) {
            firstScores.put(in.scoreDocs[i].doc, in.scoreDocs[i].score);
            if (i >= window) {
                pastOrder.add(in.scoreDocs[i].doc);
            }
        }
        VecrankRescorer.Context ctx = context(window, params);
        TopDocs out = VecrankRescorer.INSTANCE.rescore(in, searcher, ctx);

        assertEquals(DOCS, out.scoreDocs.length);
        assertEquals(window, ctx.getRescoredDocs().size());
        for (int i = 0; i < window; i++) {
            ScoreDoc hit = out.scoreDocs[i];
            assertTrue(ctx.isRescored(hit.doc));
            assertEquals(expected(hit.doc, firstScores.get(hit.doc), 1.5), hit.score, "doc " + hit.doc);
            if (i > 0) {
                ScoreDoc prev = out.scoreDocs[i - 1];
                assertTrue(prev.score > hit.score || (prev.score == hit.score && prev.doc < hit.doc), "sorted by score, then doc");
            }
        }
        float lowestRescored = out.scoreDocs[window - 1].score;
        for (int i = window; i < DOCS; i++) {
            assertEquals(pastOrder.get(i - window), out.scoreDocs[i].doc, "hits past the window keep their order");
            assertTrue(out.scoreDocs[i].score < lowestRescored && out.scoreDocs[i].score < out.scoreDocs[i - 1].score);
        }
    }

    @Test
    void keepReturnsOnlyTheBestHits() throws IOException {
        int window = 25;
        Map<String, Object> params = Map.of("profile_vector", List.of(1.0, 0.5, -0.25), "hist_len", 1.5);
        TopDocs all = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, context(window, params));
        RankModel model = model();
        for (int keep : new int[] { 1, 7, window, window + 3, DOCS + 5 }) {
            VecrankRescorer.Context ctx = new VecrankRescorer.Context(window, model, new FeaturePlan(model, params, null), keep);
            TopDocs kept = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
            assertEquals(Math.min(keep, DOCS), kept.scoreDocs.length, "keep " + keep);
            assertEquals(all.totalHits, kept.totalHits);
            for (int i = 0; i < kept.scoreDocs.length; i++) {
                assertEquals(all.scoreDocs[i].doc, kept.scoreDocs[i].doc, "keep " + keep + " position " + i);
                assertEquals(all.scoreDocs[i].score, kept.scoreDocs[i].score);
            }
            assertEquals(window, ctx.getRescoredDocs().size(), "the whole window is still scored");
        }
    }

    @Test
    void firstPassMissingMakesTheScoreFeatureMissing() throws IOException {
        // An ids lookup has no retrieval score: with first_pass_missing the score feature is NaN,
        // which follows the split's default branch (right here: +0, as for a score >= 0.3).
        Map<String, Object> params = Map.of("profile_vector", List.of(1.0, 0.5, -0.25), "hist_len", 1.5,
            "first_pass_missing", true);
        VecrankRescorer.Context ctx = context(DOCS, params);
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        for (ScoreDoc hit : out.scoreDocs) {
            assertEquals(expected(hit.doc, Float.NaN, 1.5), hit.score, "doc " + hit.doc);
        }
        IllegalArgumentException bad = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
            () -> context(DOCS, Map.of("first_pass_missing", "yes")));
        assertTrue(bad.getMessage().contains("[params.first_pass_missing] must be true or false"), bad.getMessage());
    }

    @Test
    void missingParamsAndVectorsAreMissingFeatures() throws IOException {
        VecrankRescorer.Context ctx = context(DOCS, Map.of());
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        for (ScoreDoc hit : out.scoreDocs) {
            // no profile vector: cosine missing (left, -1); no hist_len: missing (left, 0)
            float m = 0.5f - 1f + (0f); // score part added below
            assertTrue(hit.score > 0);
            assertEquals(Scores.toScore(m + (scoreOf(hit.doc) < 0.3f ? 0.5f : 0f)), hit.score);
        }
    }

    private float scoreOf(int doc) {
        for (ScoreDoc d : firstPass().scoreDocs) {
            if (d.doc == doc) {
                return d.score;
            }
        }
        throw new AssertionError(doc);
    }

    @Test
    void explainShowsTheModelScoreAndEveryFeature() throws IOException {
        Map<String, Object> params = Map.of("profile_vector", QueryParamsTests.base64(PROFILE), "hist_len", 0.5);
        VecrankRescorer.Context ctx = context(DOCS, params);
        for (int doc : new int[] { 0, 3, 17, 39 }) {
            float first = 0.2f + doc / 100f;
            Explanation e = VecrankRescorer.INSTANCE.explain(doc, searcher, ctx, Explanation.match(first, "first pass"));
            assertEquals(expected(doc, first, 0.5), e.getValue().floatValue());
            assertTrue(e.getDescription().startsWith("vecrank model [m] version [2] (rank:ndcg)"));
            Explanation features = e.getDetails()[1];
            assertEquals(3, features.getDetails().length);
            assertTrue(features.getDetails()[0].getDescription().startsWith("feature [knn_score] = " + first + " (float32 0x"));
            String cos = features.getDetails()[1].getDescription();
            if (vectors.containsKey(doc)) {
                float c = (float) cosine(vectors.get(doc), PROFILE);
                assertEquals("feature [cos_profile] = " + c + " " + VecrankRescorer.bits(c), cos);
            } else {
                assertEquals("feature [cos_profile] = NaN (missing) (float32 0x7fc00000)", cos);
            }
            assertEquals("feature [hist_len] = 0.5 (float32 0x3f000000)", features.getDetails()[2].getDescription());
            float modelScore = e.getDetails()[0].getValue().floatValue();
            assertEquals(Scores.toScore(modelScore), e.getValue().floatValue());
        }
    }

    @Test
    void explainSaysWhenAHitWasPastTheWindow() throws IOException {
        VecrankRescorer.Context ctx = context(5, Map.of());
        ctx.setRescoredDocs(java.util.Set.of(1, 2, 3));
        Explanation e = VecrankRescorer.INSTANCE.explain(9, searcher, ctx, Explanation.match(0.7f, "first pass"));
        assertEquals(0.7f, e.getValue().floatValue());
        assertTrue(e.getDescription().startsWith("not rescored by vecrank model [m] version [2]"));
    }

    @Test
    void cancellationStopsTheLoop() {
        VecrankRescorer.Context ctx = context(DOCS, Map.of());
        ctx.setCancellationChecker(() -> { throw new TaskCancelledException("cancelled"); });
        assertThrows(TaskCancelledException.class, () -> VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx));
    }

    @Test
    void paramVectorsMustAgreeWithTheField() {
        VecrankRescorer.Context ctx = context(DOCS, Map.of("profile_vector", List.of(1.0, 2.0)));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx));
        assertTrue(e.getMessage().contains("feature [cos_profile]: [params.profile_vector] has a vector of 2 dimensions; field [embedding] has 3"), e.getMessage());
    }

    @Test
    public void equalModelScoresAreOrderedByItemId() {
        // Docs 0-3 tie at 2.0 with item ids "b", "a", null (missing: last), "a10"; doc 4 scores higher.
        float[] scores = {2.0f, 2.0f, 2.0f, 2.0f, 3.0f};
        BytesRef[] keys = {new BytesRef("b"), new BytesRef("a"), null, new BytesRef("a10"), new BytesRef("z")};
        ScoreDoc[] window = new ScoreDoc[scores.length];
        for (int i = 0; i < scores.length; i++) {
            window[i] = new ScoreDoc(i, scores[i]);
        }
        ScoreDoc[] sorted = VecrankRescorer.byScoreThenKey(window, keys);
        assertEquals(List.of(4, 1, 3, 0, 2), java.util.Arrays.stream(sorted).map(d -> d.doc).toList());
        assertEquals(List.of(3.0f, 2.0f, 2.0f, 2.0f, 2.0f), java.util.Arrays.stream(sorted).map(d -> d.score).toList());
        // Without keys, ties keep doc id order.
        ScoreDoc[] plain = VecrankRescorer.byScoreThenKey(new ScoreDoc[] {new ScoreDoc(7, 1f), new ScoreDoc(3, 1f)}, null);
        assertEquals(List.of(3, 7), java.util.Arrays.stream(plain).map(d -> d.doc).toList());
    }
}
