package org.vecrank.elasticsearch;

import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class QueryParamsTests {

    static String base64(float... v) {
        ByteBuffer buf = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) {
            buf.putFloat(x);
        }
        return Base64.getEncoder().encodeToString(buf.array());
    }

    @Test
    void vectorsComeAsArraysOrBase64() {
        Map<String, Object> raw = new HashMap<>();
        raw.put("a", List.of(1.0, -2.5, 3));
        raw.put("b", base64(1f, -2.5f, 3f));
        raw.put("empty", List.of());
        raw.put("list", List.of(base64(1f, 0f), List.of(0.0, 1.0)));
        QueryParams p = new QueryParams(raw);
        assertArrayEquals(new float[] { 1f, -2.5f, 3f }, p.vector("a"));
        assertArrayEquals(new float[] { 1f, -2.5f, 3f }, p.vector("b"));
        assertNull(p.vector("empty"));
        assertNull(p.vector("absent"));
        assertEquals(2, p.vectors("list").size());
        assertArrayEquals(new float[] { 0f, 1f }, p.vectors("list").get(1));
        assertNull(p.vectors("absent"));
    }

    @Test
    void malformedVectorsAreRefused() {
        Map<String, Object> raw = Map.of("odd", Base64.getEncoder().encodeToString(new byte[] { 1, 2, 3 }), "bad", "***",
            "text", List.of("x"), "nan", base64(Float.NaN));
        QueryParams p = new QueryParams(raw);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.vector("odd")).getMessage().contains("whole number of float32"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.vector("bad")).getMessage().contains("not valid base64"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.vector("text")).getMessage().contains("[params.text][0] must be a number"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.vector("nan")).getMessage().contains("not finite"));
    }

    @Test
    void scalarsAndNow() {
        Map<String, Object> raw = new HashMap<>();
        raw.put("x", 2);
        raw.put("flag", true);
        raw.put("nothing", null);
        raw.put("word", "abc");
        raw.put("now_ms", 1_700_000_000_000L);
        QueryParams p = new QueryParams(raw);
        assertEquals(2.0, p.scalar("x"));
        assertEquals(1.0, p.scalar("flag"));
        assertTrue(Double.isNaN(p.scalar("nothing")));
        assertTrue(Double.isNaN(p.scalar("absent")));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.scalar("word")).getMessage().contains("[params.word] must be a number"));
        assertEquals(1_700_000_000_000L, p.nowMs(5));
        assertEquals(5, new QueryParams(Map.of()).nowMs(5));
    }

    @Test
    void overlapSets() {
        Map<String, Object> raw = Map.of(
            "h", Map.of("sets", List.of(List.of("a", "b"), List.of(), List.of(7)), "weights", List.of(1, 0.5, 2)),
            "short", Map.of("sets", List.of(List.of("a")), "weights", List.of()),
            "neg", Map.of("sets", List.of(List.of("a")), "weights", List.of(-1)),
            "extra", Map.of("sets", List.of(), "weights", List.of(), "other", 1)
        );
        QueryParams p = new QueryParams(raw);
        QueryParams.Overlap o = p.overlap("h");
        assertEquals(3.5, o.total());
        assertEquals("7", o.sets().get(2)[0].utf8ToString());
        assertNull(p.overlap("absent"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.overlap("short")).getMessage().contains("1 sets but 0 weights"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.overlap("neg")).getMessage().contains(">= 0"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> p.overlap("extra")).getMessage().contains("unknown key [other]"));
    }
}
