package org.vecrank.elasticsearch;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ScoresTests {

    @Test
    void gIsPositiveIncreasingAndInvertible() {
        float[] xs = { -1e6f, -100f, -3f, -1f, -0.25f, -1e-6f, 0f, 1e-6f, 0.25f, 1f, 3f, 100f, 1e6f };
        float previous = 0f;
        for (float x : xs) {
            float s = Scores.toScore(x);
            assertTrue(s > previous, "g must increase: g(" + x + ") = " + s);
            assertTrue(s >= Float.MIN_NORMAL);
            assertEquals(x, Scores.toModelScore(s), Math.max(1e-6, Math.abs(x) * 1e-6) + Math.ulp(s) * (1 + x * x));
            previous = s;
        }
        assertEquals(1f, Scores.toScore(0f));
        assertEquals(0.5f, Scores.toScore(-1f));
        assertEquals(2f, Scores.toScore(1f));
    }

    @Test
    void hitsPastTheWindowScoreBelowEveryRescoredHitInTheirOrder() {
        float lowestRescored = Scores.toScore(-1e30f);
        float previous = Float.MAX_VALUE;
        for (int i = 0; i < 10_000; i++) {
            float s = Scores.pastWindowScore(i, 10_000);
            assertTrue(s > 0 && s < previous && s < lowestRescored);
            previous = s;
        }
    }
}
