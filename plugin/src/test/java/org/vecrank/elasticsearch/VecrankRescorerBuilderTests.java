package org.vecrank.elasticsearch;

import org.elasticsearch.common.io.stream.BytesStreamOutput;
import org.elasticsearch.common.io.stream.StreamInput;
import org.elasticsearch.common.xcontent.XContentHelper;
import org.elasticsearch.search.rescore.RescorerBuilder;
import org.elasticsearch.xcontent.NamedXContentRegistry;
import org.elasticsearch.xcontent.ParseField;
import org.elasticsearch.xcontent.XContentParseException;
import org.elasticsearch.xcontent.XContentParser;
import org.elasticsearch.xcontent.XContentParserConfiguration;
import org.elasticsearch.xcontent.XContentType;
import org.elasticsearch.xcontent.json.JsonXContent;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VecrankRescorerBuilderTests {

    private final ModelCache cache = new ModelCache();

    private XContentParser parser(String json) throws IOException {
        NamedXContentRegistry registry = new NamedXContentRegistry(List.of(new NamedXContentRegistry.Entry(
            RescorerBuilder.class, new ParseField(VecrankRescorerBuilder.NAME), p -> VecrankRescorerBuilder.fromXContent(p, cache))));
        return JsonXContent.jsonXContent.createParser(XContentParserConfiguration.EMPTY.withRegistry(registry), json);
    }

    private RescorerBuilder<?> parseRescore(String json) throws IOException {
        try (XContentParser p = parser(json)) {
            p.nextToken();
            return RescorerBuilder.parseFromXContent(p, name -> {});
        }
    }

    private static final String FULL = """
        {"window_size": 500, "vecrank": {"model": "default", "version": 3, "models_index": "shop-models",
         "params": {"hist_len": 1.5, "profile_vector": [0.5, -1.0], "history_genres": {"sets": [["a"], ["b", "c"]], "weights": [1, 2]},
                    "now_ms": 1700000000000, "history_vectors": ["AACAPw=="]}}}""";

    @Test
    void parsesTheWholeRescoreSection() throws IOException {
        VecrankRescorerBuilder b = (VecrankRescorerBuilder) parseRescore(FULL);
        assertEquals("default", b.modelId());
        assertEquals(3, b.version());
        assertEquals("shop-models", b.modelsIndex());
        assertEquals(500, b.windowSize());
        assertEquals(1.5, b.params().get("hist_len"));
        assertEquals(List.of(0.5, -1.0), b.params().get("profile_vector"));
        assertEquals(1_700_000_000_000L, ((Number) b.params().get("now_ms")).longValue());
    }

    @Test
    void defaultsAndOptionalFields() throws IOException {
        VecrankRescorerBuilder b = (VecrankRescorerBuilder) parseRescore("{\"vecrank\": {\"model\": \"m\"}}");
        assertNull(b.version());
        assertEquals(VecrankRescorerBuilder.DEFAULT_MODELS_INDEX, b.modelsIndex());
        assertEquals(Map.of(), b.params());
        assertNull(b.windowSize());
    }

    @Test
    void xContentRoundTrip() throws IOException {
        VecrankRescorerBuilder b = (VecrankRescorerBuilder) parseRescore(FULL);
        String json = org.elasticsearch.common.Strings.toString(b);
        VecrankRescorerBuilder again = (VecrankRescorerBuilder) parseRescore(json);
        assertEquals(b, again);
        assertEquals(b.hashCode(), again.hashCode());
        Map<String, Object> asMap = XContentHelper.convertToMap(XContentType.JSON.xContent(), json, true);
        assertEquals(Map.of("model", "default", "version", 3, "models_index", "shop-models", "params", b.params()), asMap.get("vecrank"));
    }

    @Test
    void refusesWhatItDoesNotKnow() {
        XContentParseException unknown = assertThrows(XContentParseException.class,
            () -> parseRescore("{\"vecrank\": {\"model\": \"m\", \"modle\": 1}}"));
        assertTrue(unknown.getMessage().contains("unknown field [modle]"), unknown.getMessage());
        IllegalArgumentException noModel = assertThrows(IllegalArgumentException.class,
            () -> parseRescore("{\"vecrank\": {\"version\": 1}}"));
        assertTrue(noModel.getMessage().contains("Required [model]"), noModel.getMessage());
        Exception badVersion = assertThrows(Exception.class, () -> parseRescore("{\"vecrank\": {\"model\": \"m\", \"version\": 0}}"));
        String msg = badVersion.getCause() != null ? badVersion.getCause().getMessage() : badVersion.getMessage();
        assertTrue(msg.contains("[version] must be >= 1"), msg);
    }

    private VecrankRescorerBuilder roundTrip(VecrankRescorerBuilder b) throws IOException {
        try (BytesStreamOutput out = new BytesStreamOutput()) {
            b.writeTo(out);
            try (StreamInput in = out.bytes().streamInput()) {
                VecrankRescorerBuilder read = new VecrankRescorerBuilder(in, cache);
                assertEquals(-1, in.read(), "everything written is read");
                return read;
            }
        }
    }

    @Test
    void streamRoundTripEqualsAndHashCode() throws IOException {
        VecrankRescorerBuilder b = (VecrankRescorerBuilder) parseRescore(FULL);
        VecrankRescorerBuilder read = roundTrip(b);
        assertEquals(b, read);
        assertEquals(b.hashCode(), read.hashCode());
        assertEquals(500, read.windowSize());

        VecrankRescorerBuilder minimal = new VecrankRescorerBuilder("m", null, null, null, cache);
        assertEquals(minimal, roundTrip(minimal));

        // The document the coordinator resolved travels to the data nodes; the parsed model does not.
        RankModel model = RankModel.fromSource(Trees.modelDoc(RankModelTests.booster(RankModelTests.NAMES), RankModelTests.NAMES,
            RankModelTests.features()));
        ModelKey key = new ModelKey("shop-models", "uuid-1", "m@2", 17, 1);
        VecrankRescorerBuilder resolved = b.withModel(key, model);
        VecrankRescorerBuilder shipped = roundTrip(resolved);
        assertEquals(resolved, shipped);
        assertEquals(key, shipped.resolved());
        assertNull(shipped.model());
        assertNotEquals(b, resolved);
    }

    @Test
    void equalityLooksAtEveryField() throws IOException {
        VecrankRescorerBuilder base = new VecrankRescorerBuilder("m", 1, "i", Map.of("a", 1), cache);
        assertEquals(base, new VecrankRescorerBuilder("m", 1, "i", Map.of("a", 1), new ModelCache()));
        assertNotEquals(base, new VecrankRescorerBuilder("n", 1, "i", Map.of("a", 1), cache));
        assertNotEquals(base, new VecrankRescorerBuilder("m", 2, "i", Map.of("a", 1), cache));
        assertNotEquals(base, new VecrankRescorerBuilder("m", null, "i", Map.of("a", 1), cache));
        assertNotEquals(base, new VecrankRescorerBuilder("m", 1, "j", Map.of("a", 1), cache));
        assertNotEquals(base, new VecrankRescorerBuilder("m", 1, "i", Map.of("a", 2), cache));
        VecrankRescorerBuilder windowed = new VecrankRescorerBuilder("m", 1, "i", Map.of("a", 1), cache).windowSize(10);
        assertNotEquals(base, windowed);
        assertEquals(windowed, roundTrip(windowed));
        VecrankRescorerBuilder kept = new VecrankRescorerBuilder("m", 1, "i", Map.of("a", 1), cache).keep(10);
        assertNotEquals(base, kept);
        assertEquals(kept, roundTrip(kept));
        assertEquals(10, roundTrip(kept).keep());
    }

    @Test
    void keepIsParsedWrittenAndChecked() throws IOException {
        VecrankRescorerBuilder b = (VecrankRescorerBuilder) parseRescore("{\"vecrank\": {\"model\": \"m\", \"keep\": 10}}");
        assertEquals(10, b.keep());
        assertNull(((VecrankRescorerBuilder) parseRescore("{\"vecrank\": {\"model\": \"m\"}}")).keep());
        VecrankRescorerBuilder again = (VecrankRescorerBuilder) parseRescore(org.elasticsearch.common.Strings.toString(b));
        assertEquals(b, again);
        assertEquals(10, again.keep());
        Exception zero = assertThrows(Exception.class, () -> parseRescore("{\"vecrank\": {\"model\": \"m\", \"keep\": 0}}"));
        String msg = zero.getCause() != null ? zero.getCause().getMessage() : zero.getMessage();
        assertTrue(msg.contains("[keep] must be >= 1"), msg);
        // The resolved builder the coordinator ships keeps it.
        RankModel model = RankModel.fromSource(Trees.modelDoc(RankModelTests.booster(RankModelTests.NAMES), RankModelTests.NAMES,
            RankModelTests.features()));
        assertEquals(10, roundTrip(b.withModel(new ModelKey("i", "u", "m@1", 1, 1), model)).keep());
    }
}
