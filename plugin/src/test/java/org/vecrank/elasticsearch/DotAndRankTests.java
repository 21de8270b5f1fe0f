package org.vecrank.elasticsearch;

import org.apache.lucene.codecs.Codec;
import org.apache.lucene.codecs.FilterCodec;
import org.apache.lucene.codecs.KnnVectorsFormat;
import org.apache.lucene.codecs.perfield.PerFieldKnnVectorsFormat;
import org.apache.lucene.document.Document;
import org.apache.lucene.document.FloatDocValuesField;
import org.apache.lucene.document.KnnFloatVectorField;
import org.apache.lucene.document.SortedSetDocValuesField;
import org.apache.lucene.index.DirectoryReader;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.IndexWriterConfig;
import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.NoMergePolicy;
import org.apache.lucene.index.SegmentReader;
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
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vecrank.elasticsearch.Trees.Node.leaf;
import static org.vecrank.elasticsearch.Trees.Node.split;

/**
 * The {@code dot} and {@code rank} sources on a handcrafted index of three segments: the first and the
 * last in Lucene's default vector format, the middle one in the int8 quantized HNSW format that
 * Elasticsearch's {@code int8_hnsw} writes (it keeps the raw floats, which the plugin reads).
 */
class DotAndRankTests {

    static final List<String> NAMES = List.of("knn_score", "cf_score", "rank_cf");
    static final int DOCS = 12;
    static final String SMILE = "\uD83D\uDE00"; // U+1F600, a surrogate pair in UTF-16
    static final String FULLWIDTH_A = "\uFF21"; // U+FF21: after SMILE's high surrogate in UTF-16, before U+1F600 in code points

    /** Item ids by doc (null: none). Doc ids are 0..11 in this order, segments 0-4, 5-9, 10-11. */
    static final String[] IDS = { "b", "a", null, "c", "d", "a2", "e", FULLWIDTH_A, SMILE, "f", "g", "h" };
    /** cf_vector by doc (null: none). */
    static final float[][] CF = {
        { 2f, 1f, 0f }, { 2f, 5f, 1f }, { 2f, 0f, 0f }, null, { 1e8f, 1f, -1e8f },
        { 2f, -3f, 0.5f }, { -1f, 0f, 0f }, { 3f, 0f, 0f }, { 3f, 0f, 0f }, { 0f, 7f, 7f },
        null, { 1e17f, 1f, -1e17f },
    };

    private Directory dir;
    private DirectoryReader reader;
    private IndexSearcher searcher;
    private String quantizedFormat;

    @BeforeAll
    static void esLogging() {
        org.elasticsearch.common.logging.LogConfigurator.configureESLogging();
    }

    /** The int8 HNSW format of this Elasticsearch version, found by its SPI name (it changed across 9.x). */
    private static String int8HnswFormat() {
        Set<String> available = KnnVectorsFormat.availableKnnVectorsFormats();
        for (String name : List.of("ES94HnswScalarQuantizedVectorsFormat", "ES93HnswScalarQuantizedVectorsFormat",
            "ES814HnswScalarQuantizedVectorsFormat")) {
            if (available.contains(name)) {
                return name;
            }
        }
        throw new AssertionError("no Elasticsearch int8 HNSW format among " + available);
    }

    private static Document doc(int i) {
        Document d = new Document();
        if (IDS[i] != null) {
            d.add(new SortedSetDocValuesField("item_id", new BytesRef(IDS[i])));
        }
        if (CF[i] != null) {
            d.add(new KnnFloatVectorField("cf_vector", CF[i], VectorSimilarityFunction.EUCLIDEAN));
        }
        // "cos_vector" as Elasticsearch indexes a dense_vector with similarity cosine: v / |v| in the
        // vector (float32 division) and |v| in <field>._magnitude; a unit vector is kept as it is.
        if (i == 0) { // (3, 4, 0): |v| = 5
            d.add(new KnnFloatVectorField("cos_vector", new float[] { 3f / 5f, 4f / 5f, 0f }, VectorSimilarityFunction.DOT_PRODUCT));
            d.add(new FloatDocValuesField("cos_vector._magnitude", 5f));
        } else if (i == 1) { // (0, 1, 0), of unit length
            d.add(new KnnFloatVectorField("cos_vector", new float[] { 0f, 1f, 0f }, VectorSimilarityFunction.DOT_PRODUCT));
        } else if (i == 2) { // (1, 2, 2): |v| = 3
            d.add(new KnnFloatVectorField("cos_vector", new float[] { 1f / 3f, 2f / 3f, 2f / 3f }, VectorSimilarityFunction.DOT_PRODUCT));
            d.add(new FloatDocValuesField("cos_vector._magnitude", 3f));
        }
        return d;
    }

    @BeforeEach
    void index() throws IOException {
        dir = new ByteBuffersDirectory();
        quantizedFormat = int8HnswFormat();
        KnnVectorsFormat int8 = KnnVectorsFormat.forName(quantizedFormat);
        // The default codec's name, so that the segment reads back with it; its per-field vector
        // format records which format wrote each field.
        Codec quantized = new FilterCodec(Codec.getDefault().getName(), Codec.getDefault()) {
            @Override
            public KnnVectorsFormat knnVectorsFormat() {
                return new PerFieldKnnVectorsFormat() {
                    @Override
                    public KnnVectorsFormat getKnnVectorsFormatForField(String field) {
                        return int8;
                    }
                };
            }
        };
        int[][] segments = { { 0, 5 }, { 5, 10 }, { 10, 12 } };
        for (int s = 0; s < segments.length; s++) {
            IndexWriterConfig config = new IndexWriterConfig().setMergePolicy(NoMergePolicy.INSTANCE);
            if (s == 1) {
                config.setCodec(quantized);
            }
            try (IndexWriter w = new IndexWriter(dir, config)) {
                for (int i = segments[s][0]; i < segments[s][1]; i++) {
                    w.addDocument(doc(i));
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

    @Test
    void theMiddleSegmentIsQuantized() {
        SegmentReader middle = (SegmentReader) reader.leaves().get(1).reader();
        assertEquals(quantizedFormat, middle.getFieldInfos().fieldInfo("cf_vector").getAttribute(PerFieldKnnVectorsFormat.PER_FIELD_FORMAT_KEY));
        SegmentReader first = (SegmentReader) reader.leaves().get(0).reader();
        assertTrue(quantizedFormat.equals(first.getFieldInfos().fieldInfo("cf_vector").getAttribute(PerFieldKnnVectorsFormat.PER_FIELD_FORMAT_KEY)) == false);
    }

    // --- dot -------------------------------------------------------------------------------------

    private static Map<String, Object> dotFeature(String name, String field) {
        return Map.of("name", name, "source", "dot", "field", field, "param", "cf_vector");
    }

    /** A model that uses its features in no split: enough to extract them. */
    private static RankModel plainModel(List<String> names, List<Map<String, Object>> features) {
        String booster = Trees.booster("rank:ndcg", "\"0E0\"", names.size(), names, Trees.tree(0, leaf(0f)));
        return RankModel.fromSource(Trees.modelDoc(booster, names, features));
    }

    private static RankModel dotModel(String field) {
        return plainModel(List.of("knn_score", "cf_score"), List.of(Map.of("name", "knn_score", "source", "score"), dotFeature("cf_score", field)));
    }

    /** The feature values the plan computes for every document, by global doc id. */
    private float[][] extract(RankModel model, Map<String, Object> params) throws IOException {
        FeaturePlan plan = new FeaturePlan(model, params, null);
        float[][] out = new float[DOCS][plan.size()];
        FeaturePlan.Extractor extractor = plan.open();
        for (LeafReaderContext leaf : reader.leaves()) {
            extractor.setNextReader(leaf);
            for (int doc = 0; doc < leaf.reader().maxDoc(); doc++) {
                extractor.extract(doc, 0.25f, out[leaf.docBase + doc], 0);
            }
        }
        return out;
    }

    @Test
    void dotIsTheUnnormalizedProductInEverySegment() throws IOException {
        // q = (0.5, -2, 0.25), as base64 little-endian float32; every product and sum below is exact.
        float[][] f = extract(dotModel("cf_vector"), Map.of("cf_vector", QueryParamsTests.base64(0.5f, -2f, 0.25f)));
        float[] want = {
            1f - 2f + 0f,            // (2, 1, 0)
            1f - 10f + 0.25f,        // (2, 5, 1)
            1f,                      // (2, 0, 0)
            Float.NaN,               // no vector
            24999998f,               // (1e8, 1, -1e8): 5e7 - 2 - 2.5e7, a float32
            1f + 6f + 0.125f,        // (2, -3, 0.5), quantized segment: the raw floats
            -0.5f,                   // (-1, 0, 0)
            1.5f, 1.5f,              // (3, 0, 0) twice
            -14f + 1.75f,            // (0, 7, 7)
            Float.NaN,               // no vector
            // (1e17, 1, -1e17): the products are exact in double; summed left to right (index order)
            // the -2 is lost next to 5e16 (whose ulp is 8), then a quarter of 1e17f is taken off.
            (float) ((double) 1e17f * 0.5 + (double) 1f * -2.0 + (double) -1e17f * 0.25),
        };
        for (int doc = 0; doc < DOCS; doc++) {
            assertEquals(want[doc], f[doc][1], "doc " + doc);
            assertEquals(0.25f, f[doc][0]);
        }
        assertEquals((float) ((double) 1e17f * 0.25), f[11][1]);
    }

    @Test
    void dotAccumulatesInDoubleInIndexOrder() throws IOException {
        float[][] f = extract(dotModel("cf_vector"), Map.of("cf_vector", List.of(1.0, 1.0, 1.0)));
        // (1e8, 1, -1e8): float32 accumulation would lose the 1 (1e8 + 1 rounds to 1e8); double keeps it.
        assertEquals(1f, f[4][1]);
        // (1e17, 1, -1e17): in double 1e17 + 1 rounds back to 1e17 (its ulp is 16), so index order gives 0,
        // where summing the two large terms first would give 1.
        assertEquals(0f, f[11][1]);
        assertEquals(3f, f[0][1]);
        assertEquals(14f, f[9][1]);
    }

    @Test
    void aMissingVectorOrAnAbsentNullOrEmptyParamIsMissing() throws IOException {
        Map<String, Object> nullParam = new HashMap<>();
        nullParam.put("cf_vector", null);
        for (Map<String, Object> params : List.of(Map.<String, Object>of(), nullParam, Map.<String, Object>of("cf_vector", List.of()),
            Map.<String, Object>of("cf_vector", ""))) {
            for (float[] row : extract(dotModel("cf_vector"), params)) {
                assertTrue(Float.isNaN(row[1]), params.toString());
            }
        }
        float[][] unmapped = extract(dotModel("no_such_vector"), Map.of("cf_vector", List.of(1.0, 1.0, 1.0)));
        for (float[] row : unmapped) {
            assertTrue(Float.isNaN(row[1]), "no segment has the field: missing");
        }
        float[][] zero = extract(dotModel("cf_vector"), Map.of("cf_vector", List.of(0.0, 0.0, 0.0)));
        assertEquals(0f, zero[0][1], "a zero vector has a dot product (unlike a cosine)");
        assertTrue(Float.isNaN(zero[3][1]));
    }

    @Test
    void aParamOfTheWrongLengthIsRefusedWithBothLengths() {
        FeaturePlan plan = new FeaturePlan(dotModel("cf_vector"), Map.of("cf_vector", QueryParamsTests.base64(1f, 2f)), null);
        FeaturePlan.Extractor extractor = plan.open();
        String msg = assertThrows(IllegalArgumentException.class, () -> extractor.setNextReader(reader.leaves().get(0))).getMessage();
        assertEquals("feature [cf_score]: [params.cf_vector] has a vector of 2 dimensions; field [cf_vector] has 3", msg);
        String bad = assertThrows(IllegalArgumentException.class,
            () -> new FeaturePlan(dotModel("cf_vector"), Map.of("cf_vector", "not base64!"), null)).getMessage();
        assertTrue(bad.startsWith("feature [cf_score] of model [m] version [2]: [params.cf_vector] is not valid base64"), bad);
    }

    @Test
    void aVectorThatElasticsearchNormalizedIsReadBackWithItsMagnitude() throws IOException {
        // Elasticsearch's reading of such a vector: each stored component times the magnitude, in float32.
        float[][] f = extract(dotModel("cos_vector"), Map.of("cf_vector", List.of(0.5, -2.0, 0.25)));
        assertEquals(1.5f - 8f, f[0][1], "(3, 4, 0) = (0.6f, 0.8f, 0) * 5");
        assertEquals(-2f, f[1][1], "a unit vector has no magnitude and is read as stored");
        assertEquals(0.5f - 4f + 0.5f, f[2][1], "(1, 2, 2) = (1/3f, 2/3f, 2/3f) * 3");
        assertEquals((float) ((double) (0.6f * 5f) * 0.5f + (double) (0.8f * 5f) * -2f), f[0][1]);
        assertTrue(Float.isNaN(f[3][1]));
        // Cosines do not depend on the magnitude.
        RankModel cos = plainModel(List.of("c"), List.of(Map.of("name", "c", "source", "cosine", "field", "cos_vector", "param", "p")));
        float[][] c = extract(cos, Map.of("p", List.of(0.0, 1.0, 0.0)));
        assertEquals(0.8f, c[0][0]);
    }

    // --- rank ------------------------------------------------------------------------------------

    /** knn_score, cf_score (dot), rank_cf (rank of cf_score); the model's margin is 9 - rank_cf (0 when it is missing). */
    private static RankModel rankModel(String of) {
        String[] trees = new String[8];
        for (int k = 1; k <= 8; k++) {
            trees[k - 1] = Trees.tree(k - 1, split(2, k + 0.5f, false, 1, 2), leaf(1f), leaf(0f)); // rank <= k: +1; missing: right, +0
        }
        String booster = Trees.booster("rank:ndcg", "\"0E0\"", 3, NAMES, trees);
        return RankModel.fromSource(Trees.modelDoc(booster, NAMES, List.of(
            Map.of("name", "knn_score", "source", "score"),
            dotFeature("cf_score", "cf_vector"),
            Map.of("name", "rank_cf", "source", "rank", "of", of))));
    }

    /** q = (1, 0, 0): cf_score is the vector's first component. */
    private static final Map<String, Object> FIRST_COMPONENT = Map.of("cf_vector", QueryParamsTests.base64(1f, 0f, 0f));

    /** First pass: these docs in this order with decreasing scores; a window of 9 covers segments 0 and 1 only. */
    private static final int[] FIRST_PASS = { 7, 1, 4, 5, 0, 2, 8, 3, 6, 9, 10, 11 };
    private static final int WINDOW = 9;

    private static TopDocs firstPass() {
        ScoreDoc[] docs = new ScoreDoc[FIRST_PASS.length];
        for (int i = 0; i < docs.length; i++) {
            docs[i] = new ScoreDoc(FIRST_PASS[i], 1f - i / 16f);
        }
        return new TopDocs(new TotalHits(docs.length, TotalHits.Relation.EQUAL_TO), docs);
    }

    private static Set<Integer> window() {
        Set<Integer> out = new HashSet<>();
        for (int i = 0; i < WINDOW; i++) {
            out.add(FIRST_PASS[i]);
        }
        return out;
    }

    /**
     * The ranks by cf_score = the first component, worked out by hand: doc 4 (1e8) first; 3 twice (docs 7
     * and 8: U+FF21 before U+1F600, code point order); 2 four times (docs 1 "a", 5 "a2", 0 "b", then 2
     * without an item_id); -1 (doc 6); doc 3 has no vector (NaN, no place). Docs 9-11 are past the window.
     */
    private static final Map<Integer, Float> CF_RANKS = Map.of(4, 1f, 7, 2f, 8, 3f, 1, 4f, 5, 5f, 0, 6f, 2, 7f, 6, 8f, 3, Float.NaN);

    private static String rankLine(Explanation e) {
        return e.getDetails()[1].getDetails()[2].getDescription();
    }

    private static String expectedLine(float rank) {
        return Float.isNaN(rank) ? "feature [rank_cf] = NaN (missing) (float32 0x7fc00000)"
            : "feature [rank_cf] = " + rank + " " + VecrankRescorer.bits(rank);
    }

    @Test
    void ranksOrderTheWindowByValueThenItemIdAndSkipMissingValues() throws IOException {
        RankModel model = rankModel("cf_score");
        VecrankRescorer.Context ctx = new VecrankRescorer.Context(WINDOW, model, new FeaturePlan(model, FIRST_COMPONENT, null));
        TopDocs out = VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        assertEquals(window(), ctx.getRescoredDocs());
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < WINDOW; i++) {
            ScoreDoc hit = out.scoreDocs[i];
            float rank = CF_RANKS.get(hit.doc);
            assertEquals(Scores.toScore(Float.isNaN(rank) ? 0f : 9f - rank), hit.score, "doc " + hit.doc);
            order.add(hit.doc);
        }
        assertEquals(List.of(4, 7, 8, 1, 5, 0, 2, 6, 3), order, "the model follows the ranks; the unranked doc comes last");
        assertEquals(List.of(9, 10, 11), List.of(out.scoreDocs[9].doc, out.scoreDocs[10].doc, out.scoreDocs[11].doc));

        // explain in the rescore's own context (a search of one shard) reports the ranks it used.
        for (int doc : CF_RANKS.keySet()) {
            Explanation e = VecrankRescorer.INSTANCE.explain(doc, searcher, ctx, Explanation.match(0.5f, "first pass"));
            assertEquals(expectedLine(CF_RANKS.get(doc)), rankLine(e), "doc " + doc);
            assertEquals(scoreOf(out, doc), e.getValue().floatValue(), "doc " + doc);
        }
    }

    private static float scoreOf(TopDocs out, int doc) {
        for (ScoreDoc hit : out.scoreDocs) {
            if (hit.doc == doc) {
                return hit.score;
            }
        }
        throw new AssertionError(doc);
    }

    @Test
    void explainInAFetchPhaseOfItsOwnRecomputesTheRanksFromTheWindow() throws IOException {
        RankModel model = rankModel("cf_score");
        // A search of several shards fetches in a new context, which Elasticsearch gives the window's doc ids.
        VecrankRescorer.Context fetch = new VecrankRescorer.Context(WINDOW, model, new FeaturePlan(model, FIRST_COMPONENT, null));
        fetch.setRescoredDocs(window());
        for (int doc : CF_RANKS.keySet()) {
            Explanation e = VecrankRescorer.INSTANCE.explain(doc, searcher, fetch, Explanation.match(0.5f, "first pass"));
            assertEquals(expectedLine(CF_RANKS.get(doc)), rankLine(e), "doc " + doc);
            float rank = CF_RANKS.get(doc);
            assertEquals(Scores.toScore(Float.isNaN(rank) ? 0f : 9f - rank), e.getValue().floatValue());
        }
        Explanation past = VecrankRescorer.INSTANCE.explain(11, searcher, fetch, Explanation.match(0.1f, "first pass"));
        assertTrue(past.getDescription().startsWith("not rescored by vecrank model [m] version [2]"));

        // Without a window there is nothing to rank within: NaN, and the line says why.
        VecrankRescorer.Context none = new VecrankRescorer.Context(WINDOW, model, new FeaturePlan(model, FIRST_COMPONENT, null));
        Explanation e = VecrankRescorer.INSTANCE.explain(4, searcher, none, Explanation.match(0.5f, "first pass"));
        assertEquals("feature [rank_cf] = NaN (missing) (float32 0x7fc00000) " + VecrankRescorer.RANK_UNKNOWN_WINDOW, rankLine(e));
        assertEquals(Scores.toScore(0f), e.getValue().floatValue());
    }

    @Test
    void aRankOfTheFirstPassScoreIsExplainedWhereTheScoresAreKnown() throws IOException {
        RankModel model = rankModel("knn_score");
        VecrankRescorer.Context ctx = new VecrankRescorer.Context(WINDOW, model, new FeaturePlan(model, FIRST_COMPONENT, null));
        VecrankRescorer.INSTANCE.rescore(firstPass(), searcher, ctx);
        for (int i = 0; i < WINDOW; i++) { // distinct decreasing first-pass scores: the rank is the position
            Explanation e = VecrankRescorer.INSTANCE.explain(FIRST_PASS[i], searcher, ctx, Explanation.match(1f - i / 16f, "first pass"));
            assertEquals(expectedLine(i + 1), rankLine(e), "doc " + FIRST_PASS[i]);
        }
        VecrankRescorer.Context fetch = new VecrankRescorer.Context(WINDOW, model, new FeaturePlan(model, FIRST_COMPONENT, null));
        fetch.setRescoredDocs(window());
        Explanation e = VecrankRescorer.INSTANCE.explain(7, searcher, fetch, Explanation.match(1f, "first pass"));
        assertEquals("feature [rank_cf] = NaN (missing) (float32 0x7fc00000) " + VecrankRescorer.RANK_UNKNOWN_FIRST_PASS, rankLine(e));
    }

    @Test
    void theRankPassOrdersValuesKeysAndDocs() {
        // Rows of (knn_score, cf_score, rank_cf); the rank pass reads column 1 and writes column 2.
        RankModel model = rankModel("cf_score");
        FeaturePlan plan = new FeaturePlan(model, Map.of(), null);
        float[] values = { 0f, -0f, Float.NaN, Float.POSITIVE_INFINITY, 0f, Float.NEGATIVE_INFINITY, 0f, -0f, 5f };
        BytesRef[] keys = { new BytesRef("b"), new BytesRef("a"), new BytesRef("a"), null, null, new BytesRef("z"), new BytesRef("b"),
            new BytesRef("ab"), null };
        float[] rows = new float[values.length * 3];
        for (int i = 0; i < values.length; i++) {
            rows[i * 3 + 1] = values[i];
            rows[i * 3 + 2] = 123f; // overwritten
        }
        plan.rank(rows, values.length, keys);
        // +inf (3); 5 (8); the zeros, -0 equal to 0: "a" (1), "ab" (7), "b" (0), "b" again (6: doc order), no key (4); -inf (5); NaN (2).
        float[] want = { 5f, 3f, Float.NaN, 1f, 7f, 8f, 6f, 4f, 2f };
        for (int i = 0; i < values.length; i++) {
            assertEquals(want[i], rows[i * 3 + 2], "row " + i);
        }
        float[] noKeys = new float[] { 0f, 1f, 0f, 0f, 1f, 0f };
        plan.rank(noKeys, 2, null);
        assertEquals(1f, noKeys[2], "no keys at all: doc order");
        assertEquals(2f, noKeys[5]);
    }

    @Test
    void tieKeysCompareByCodePointLikePythonStrings() {
        // Python: "\uff21" < "\U0001f600" (code points); Java's String.compareTo (UTF-16 units) says the opposite.
        BytesRef fullwidth = new BytesRef(FULLWIDTH_A);
        BytesRef smile = new BytesRef(SMILE);
        assertTrue(FeaturePlan.compareTieKeys(fullwidth, smile) < 0);
        assertTrue(FULLWIDTH_A.compareTo(SMILE) > 0, "UTF-16 order differs here");
        assertTrue(FeaturePlan.compareTieKeys(new BytesRef("a"), new BytesRef("a2")) < 0);
        assertTrue(FeaturePlan.compareTieKeys(new BytesRef("Z"), new BytesRef("a")) < 0);
        assertTrue(FeaturePlan.compareTieKeys(new BytesRef("\u00e9"), new BytesRef("f")) > 0);
        assertTrue(FeaturePlan.compareTieKeys(new BytesRef("zzz"), null) < 0, "a missing key sorts after every present one");
        assertTrue(FeaturePlan.compareTieKeys(null, new BytesRef("")) > 0);
        assertEquals(0, FeaturePlan.compareTieKeys(null, null));
    }

    @Test
    void tieKeysAreReadPerSegmentAndCopied() throws IOException {
        FeaturePlan plan = new FeaturePlan(rankModel("cf_score"), FIRST_COMPONENT, null);
        FeaturePlan.Extractor extractor = plan.open();
        List<BytesRef> keys = new ArrayList<>();
        for (LeafReaderContext leaf : reader.leaves()) {
            extractor.setNextReader(leaf);
            for (int doc = 0; doc < leaf.reader().maxDoc(); doc++) {
                keys.add(extractor.tieKey(doc));
            }
        }
        for (int doc = 0; doc < DOCS; doc++) {
            assertEquals(IDS[doc] == null ? null : new BytesRef(IDS[doc]), keys.get(doc), "doc " + doc);
        }
        assertNull(new FeaturePlan(dotModel("cf_vector"), Map.of(), null).open().tieKey(0), "no rank feature, no key");
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
    void aModelWithARankRescoresOnlyIndicesOfOneShard() {
        String msg = assertThrows(IllegalArgumentException.class, () -> FeaturePlan.checkShards(rankModel("cf_score"), settings(3)))
            .getMessage();
        assertEquals("model [m] version [2] has feature [rank_cf] of source [rank], which ranks within one shard's rescore window: "
            + "it rescores indices of one shard only, and index [items] has 3 shards", msg);
        FeaturePlan.checkShards(rankModel("cf_score"), settings(1));
        FeaturePlan.checkShards(dotModel("cf_vector"), settings(3));
    }
}
