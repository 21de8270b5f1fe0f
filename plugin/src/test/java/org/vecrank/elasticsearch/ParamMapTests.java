package org.vecrank.elasticsearch;

import org.apache.lucene.document.Document;
import org.apache.lucene.document.NumericDocValuesField;
import org.apache.lucene.document.SortedDocValuesField;
import org.apache.lucene.document.SortedSetDocValuesField;
import org.apache.lucene.index.DirectoryReader;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.IndexWriterConfig;
import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.NoMergePolicy;
import org.apache.lucene.search.Explanation;
import org.apache.lucene.search.IndexSearcher;
import org.apache.lucene.search.ScoreDoc;
import org.apache.lucene.search.TopDocs;
import org.apache.lucene.search.TotalHits;
import org.apache.lucene.store.ByteBuffersDirectory;
import org.apache.lucene.store.Directory;
import org.apache.lucene.util.BytesRef;
import org.elasticsearch.common.io.stream.BytesStreamOutput;
import org.elasticsearch.common.io.stream.StreamInput;
import org.elasticsearch.xcontent.XContentParser;
import org.elasticsearch.xcontent.XContentParserConfiguration;
import org.elasticsearch.xcontent.json.JsonXContent;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vecrank.elasticsearch.Trees.Node.leaf;
import static org.vecrank.elasticsearch.Trees.Node.split;

/** The {@code param_map} source: per-document values given with the request, looked up by a keyword doc value. */
class ParamMapTests {

    static final List<String> NAMES = List.of("knn_score", "cooc");
    static final int DOCS = 30;

    private Directory dir;
    private DirectoryReader reader;
    private IndexSearcher searcher;

    /** Doc i has key "item<i>" (SORTED_SET, as keyword fields store it), but every 7th has none. */
    private static String key(int doc) {
        return doc % 7 == 6 ? null : "item" + doc;
    }

    @BeforeEach
    void index() throws IOException {
        dir = new ByteBuffersDirectory();
        try (IndexWriter w = new IndexWriter(dir, new IndexWriterConfig().setMergePolicy(NoMergePolicy.INSTANCE))) {
            for (int i = 0; i < DOCS; i++) {
                Document d = new Document();
                if (key(i) != null) {
                    d.add(new SortedSetDocValuesField("item_id", new BytesRef(key(i))));
                }
                d.add(new SortedDocValuesField("single", new BytesRef("s" + i)));
                if (i % 2 == 0) { // several values: the first (smallest) is the key
                    d.add(new SortedSetDocValuesField("tags", new BytesRef("b" + i)));
                    d.add(new SortedSetDocValuesField("tags", new BytesRef("a" + i)));
                }
                d.add(new NumericDocValuesField("year", 2000 + i));
                w.addDocument(d);
                if (i % 11 == 10) {
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

    private static Map<String, Object> cooc(String keyField) {
        return Map.of("name", "cooc", "source", "param_map", "param", "cooc", "key_field", keyField);
    }

    private static RankModel model(String keyField) {
        // cooc < 0.3 (or missing) -> -1, else +2; the first-pass score adds 0.5 below 0.5.
        String byCooc = Trees.tree(0, split(1, 0.3f, true, 1, 2), leaf(-1f), leaf(2f));
        String byScore = Trees.tree(1, split(0, 0.5f, false, 1, 2), leaf(0.5f), leaf(0f));
        String booster = Trees.booster("rank:ndcg", "\"0E0\"", 2, NAMES, byCooc, byScore);
        return RankModel.fromSource(Trees.modelDoc(booster, NAMES, List.of(Map.of("name", "knn_score", "source", "score"), cooc(keyField))));
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

    private static Map<String, Object> coocParam(Map<String, Object> values, Object defaultValue) {
        Map<String, Object> param = new HashMap<>();
        param.put("values", values);
        param.put("default", defaultValue);
        return Map.of("cooc", param);
    }

    private static Map<String, Object> someValues() {
        Map<String, Object> values = new HashMap<>();
        values.put("item0", 0.5);
        values.put("item3", 1); // an integer
        values.put("item4", null); // null: missing for that key
        values.put("item12", 0.1);
        values.put("item19", 0.3f);
        values.put("unknown-item", 0.9);
        return values;
    }

    @Test
    void aPresentKeyReadsItsValueAnAbsentKeyTheDefault() throws IOException {
        float[][] f = extract(model("item_id"), coocParam(someValues(), 0.0625));
        for (int doc = 0; doc < DOCS; doc++) {
            float want = switch (doc) {
                case 0 -> 0.5f;
                case 3 -> 1f;
                case 4 -> Float.NaN;
                case 12 -> (float) 0.1;
                case 19 -> 0.3f;
                default -> key(doc) == null ? Float.NaN : 0.0625f; // no key: missing; absent key: the default
            };
            assertEquals(want, f[doc][1], "doc " + doc);
            assertEquals(0.25f, f[doc][0]);
        }
    }

    @Test
    void aNullOrAbsentDefaultIsMissing() throws IOException {
        float[][] withNull = extract(model("item_id"), coocParam(someValues(), null));
        Map<String, Object> noDefault = Map.of("cooc", Map.of("values", Map.of("item1", 0.75)));
        float[][] absent = extract(model("item_id"), noDefault);
        for (int doc = 0; doc < DOCS; doc++) {
            if (doc != 0 && doc != 3 && doc != 12 && doc != 19) {
                assertTrue(Float.isNaN(withNull[doc][1]), "doc " + doc);
            }
            assertEquals(doc == 1 ? 0.75f : Float.NaN, absent[doc][1], "doc " + doc);
        }
        assertEquals(0.5f, withNull[0][1]);
    }

    @Test
    void aJsonNullDefaultIsMissingForKeysTheValuesLack() throws IOException {
        // As Python sends it (default None): parsed by the rescore section's parser (XContentParser.map(),
        // which keeps the null), then shipped to the data nodes (the builder's generic map on the wire).
        String json = "{\"cooc\": {\"values\": {\"item0\": 0.5, \"item1\": null, \"item5\": 0}, \"default\": null}}";
        Map<String, Object> parsed;
        try (XContentParser p = JsonXContent.jsonXContent.createParser(XContentParserConfiguration.EMPTY, json)) {
            parsed = p.map();
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> cooc = (Map<String, Object>) parsed.get("cooc");
        assertTrue(cooc.containsKey("default") && cooc.get("default") == null, "the null is kept: " + cooc);
        VecrankRescorerBuilder shipped;
        try (BytesStreamOutput out = new BytesStreamOutput()) {
            new VecrankRescorerBuilder("m", null, null, parsed, null).writeTo(out);
            try (StreamInput in = out.bytes().streamInput()) {
                shipped = new VecrankRescorerBuilder(in, null);
            }
        }
        assertEquals(parsed, shipped.params());
        for (Map<String, Object> params : List.of(parsed, shipped.params())) {
            float[][] f = extract(model("item_id"), params);
            for (int doc = 0; doc < DOCS; doc++) {
                float want = doc == 0 ? 0.5f : doc == 5 ? 0f : Float.NaN; // item1: null; every other key: absent, the null default
                assertEquals(want, f[doc][1], "doc " + doc);
            }
        }
        // A null default is no zero: with "default": 0 the absent keys read 0.
        float[][] zero = extract(model("item_id"), coocParam(Map.of("item0", 0.5), 0));
        assertEquals(0f, zero[2][1]);
        assertTrue(Float.isNaN(zero[6][1]), "a document without a key is missing whatever the default");
    }

    @Test
    void anAbsentOrNullParamIsMissingForEveryDocument() throws IOException {
        Map<String, Object> nullParam = new HashMap<>();
        nullParam.put("cooc", null);
        for (Map<String, Object> params : List.of(Map.<String, Object>of(), nullParam, Map.<String, Object>of("other", 1))) {
            for (float[] row : extract(model("item_id"), params)) {
                assertTrue(Float.isNaN(row[1]));
            }
        }
    }

    @Test
    void sortedAndMultiValuedKeysAreRead() throws IOException {
        float[][] single = extract(model("single"), coocParam(Map.of("s2", 0.5, "s25", 0.75), -1));
        float[][] multi = extract(model("tags"), coocParam(Map.of("a4", 0.5, "b6", 0.75), 2));
        for (int doc = 0; doc < DOCS; doc++) {
            assertEquals(doc == 2 ? 0.5f : doc == 25 ? 0.75f : -1f, single[doc][1], "doc " + doc);
            // "tags" holds a<i> and b<i> on even docs; the key is the first (smallest) value, a<i>
            assertEquals(doc % 2 == 1 ? Float.NaN : doc == 4 ? 0.5f : 2f, multi[doc][1], "doc " + doc);
        }
        float[][] unknownField = extract(model("nothing"), coocParam(Map.of("item1", 0.5), 1));
        for (float[] row : unknownField) {
            assertTrue(Float.isNaN(row[1]), "no segment has the field: missing");
        }
    }

    @Test
    void aKeyFieldWithoutKeywordDocValuesIsRefused() {
        RankModel model = model("year");
        FeaturePlan plan = new FeaturePlan(model, coocParam(Map.of("x", 1), 0), null);
        FeaturePlan.Extractor extractor = plan.open();
        String msg = assertThrows(IllegalArgumentException.class, () -> extractor.setNextReader(reader.leaves().get(0))).getMessage();
        assertTrue(msg.contains("feature [cooc]: key_field [year] holds NUMERIC doc values; source [param_map] needs a keyword field"), msg);
    }

    @Test
    void theRescoreLoopAndTheExplanationUseTheValues() throws IOException {
        RankModel model = model("item_id");
        Map<String, Object> params = coocParam(someValues(), 0.0625);
        ScoreDoc[] first = new ScoreDoc[DOCS];
        for (int i = 0; i < DOCS; i++) {
            first[i] = new ScoreDoc(DOCS - 1 - i, 1f - i / (float) DOCS);
        }
        Map<Integer, Float> firstScore = new HashMap<>();
        for (ScoreDoc d : first) {
            firstScore.put(d.doc, d.score);
        }
        VecrankRescorer.Context ctx = new VecrankRescorer.Context(DOCS, model, new FeaturePlan(model, params, null));
        TopDocs out = VecrankRescorer.INSTANCE.rescore(new TopDocs(new TotalHits(DOCS, TotalHits.Relation.EQUAL_TO), first), searcher, ctx);
        List<Integer> high = new ArrayList<>();
        for (ScoreDoc hit : out.scoreDocs) {
            boolean coocHigh = hit.doc == 0 || hit.doc == 3 || hit.doc == 19; // >= 0.3
            float m = (coocHigh ? 2f : -1f) + (firstScore.get(hit.doc) < 0.5f ? 0.5f : 0f);
            assertEquals(Scores.toScore(m), hit.score, "doc " + hit.doc);
            if (coocHigh) {
                high.add(hit.doc);
            }
        }
        assertEquals(List.of(0, 3, 19), high.stream().sorted().toList());
        assertTrue(List.of(0, 3, 19).contains(out.scoreDocs[0].doc), "the co-liked documents come first");

        for (int doc : new int[] { 0, 4, 6, 12, 21 }) {
            Explanation e = VecrankRescorer.INSTANCE.explain(doc, searcher, ctx, Explanation.match(0.7f, "first pass"));
            String cooc = e.getDetails()[1].getDetails()[1].getDescription();
            float want = switch (doc) {
                case 0 -> 0.5f;
                case 12 -> (float) 0.1;
                case 21 -> 0.0625f;
                default -> Float.NaN; // 4: null value, 6: no key
            };
            String expected = Float.isNaN(want) ? "feature [cooc] = NaN (missing) (float32 0x7fc00000)"
                : "feature [cooc] = " + want + " " + VecrankRescorer.bits(want);
            assertEquals(expected, cooc, "doc " + doc);
        }
    }

    @Test
    void malformedParamsAreRefusedWithTheirPlace() {
        RankModel model = model("item_id");
        Map<String, Object> stringValue = new HashMap<>(someValues());
        stringValue.put("item7", "0.5");
        Map<String, Object> boolValue = Map.of("item7", true);
        Map<String, Object> listValue = Map.of("item7", List.of(0.5));
        Object[][] cases = {
            { 0.5, "[params.cooc] must be {\"values\": {\"<key>\": number, ...}, \"default\": number or null}, got double 0.5" },
            { List.of(1, 2), "[params.cooc] must be {\"values\"" },
            { Map.of("default", 0), "[params.cooc] needs [values], an object of document keys to numbers, got null" },
            { Map.of("values", List.of(1)), "[params.cooc] needs [values], an object of document keys to numbers, got list" },
            { Map.of("values", Map.of(), "weights", 1), "[params.cooc] has unknown key [weights]; known: values, default" },
            { Map.of("values", stringValue), "[params.cooc][values][item7] must be a number or null, got string 0.5" },
            { Map.of("values", boolValue), "[params.cooc][values][item7] must be a number or null, got boolean true" },
            { Map.of("values", listValue), "[params.cooc][values][item7] must be a number or null, got list" },
            { Map.of("values", Map.of("x", Double.POSITIVE_INFINITY)), "[params.cooc][values][x] must be a finite number or null" },
            { Map.of("values", Map.of(), "default", "0"), "[params.cooc][default] must be a number or null, got string 0" },
        };
        for (Object[] c : cases) {
            Map<String, Object> params = Map.of("cooc", c[0]);
            String msg = assertThrows(IllegalArgumentException.class, () -> new FeaturePlan(model, params, null)).getMessage();
            assertTrue(msg.startsWith("feature [cooc] of model [m] version [2]: "), msg);
            assertTrue(msg.contains((String) c[1]), msg + " should contain " + c[1]);
        }
    }

    @Test
    void theParamIsCheckedOnceAndReadByKey() {
        QueryParams p = new QueryParams(coocParam(someValues(), 0));
        QueryParams.ParamMap m = p.paramMap("cooc");
        assertEquals(6, m.values().size());
        assertEquals(0.5, m.get("item0"));
        assertEquals(0.0, m.get("item1"));
        assertTrue(Double.isNaN(m.get("item4")));
        assertEquals((double) 0.3f, m.get("item19"), "computed in double from the number given");
        assertEquals(0.0, m.get("item-not-there"), "a key the values lack reads the default");
        assertTrue(Double.isNaN(new QueryParams(coocParam(someValues(), null)).paramMap("cooc").get("item-not-there")));
        assertNull(p.paramMap("absent"));
    }

    @Test
    void featureDefinitionsNeedParamAndKeyField() {
        String[][] cases = {
            { "{\"name\": \"c\", \"source\": \"param_map\", \"key_field\": \"item_id\"}", "with source [param_map] needs [param]" },
            { "{\"name\": \"c\", \"source\": \"param_map\", \"param\": \"c\"}", "with source [param_map] needs [key_field]" },
            { "{\"name\": \"c\", \"source\": \"param_map\", \"param\": \"c\", \"key_field\": \"k\", \"field\": \"f\"}", "takes no [field]" },
            { "{\"name\": \"c\", \"source\": \"param_map\", \"param\": \"c\", \"key_field\": \"k\", \"transform\": \"log1p\"}",
                "takes no [transform]" },
            { "{\"name\": \"c\", \"source\": \"param_map\", \"param\": \"c\", \"key_field\": 3}", "[key_field] must be a non-empty string" },
            { "{\"name\": \"c\", \"source\": \"param\", \"key_field\": \"k\"}", "with source [param] takes no [key_field]" },
        };
        for (String[] c : cases) {
            Object raw = ExactJson.parse(c[0]);
            String msg = assertThrows(IllegalArgumentException.class, () -> FeatureDef.parse(raw, 1)).getMessage();
            assertTrue(msg.contains(c[1]), msg + " should contain " + c[1]);
        }
        FeatureDef def = FeatureDef.parse(ExactJson.parse("{\"name\": \"cooc\", \"source\": \"param_map\", \"param\": \"cooc\", "
            + "\"key_field\": \"item_id\"}"), 0);
        assertEquals(new FeatureDef("cooc", FeatureDef.Source.PARAM_MAP, null, null, "cooc", "item_id"), def);
        assertEquals("param_map", def.source().jsonName());
    }
}
