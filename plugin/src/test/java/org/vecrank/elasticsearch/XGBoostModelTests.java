package org.vecrank.elasticsearch;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vecrank.elasticsearch.Trees.Node.leaf;
import static org.vecrank.elasticsearch.Trees.Node.split;

class XGBoostModelTests {

    private static float predict(String json, float... row) {
        return XGBoostModel.parse(json).predict(row, 0);
    }

    @Test
    void lessThanGoesLeftEqualGoesRight() {
        String json = Trees.booster("rank:ndcg", "\"0E0\"", 3, null, Trees.stump(1, 0.5f, true));
        assertEquals(1.0f, predict(json, 9f, 0.4999999f, 9f));
        assertEquals(2.0f, predict(json, 9f, 0.5f, 9f), "a value equal to the threshold goes right");
        assertEquals(2.0f, predict(json, 9f, 7f, 9f));
        assertEquals(1.0f, predict(json, 9f, Float.NEGATIVE_INFINITY, 9f));
    }

    @Test
    void missingFollowsDefaultLeft() {
        String left = Trees.booster("rank:ndcg", "\"0E0\"", 3, null, Trees.stump(0, 0.5f, true));
        String right = Trees.booster("rank:ndcg", "\"0E0\"", 3, null, Trees.stump(0, 0.5f, false));
        assertEquals(1.0f, predict(left, Float.NaN, 0f, 0f));
        assertEquals(2.0f, predict(right, Float.NaN, 0f, 0f));
        // NaN in a feature the tree does not use changes nothing
        assertEquals(1.0f, predict(right, 0f, Float.NaN, Float.NaN));
    }

    @Test
    void deeperTreeWalksEachLevel() {
        // x0 < 0 ? (x1 < 1 ? 10 : 20) : (x2 < 2 ? 30 : 40); missing x1 -> right, missing x2 -> left
        String t = Trees.tree(
            0,
            split(0, 0f, true, 1, 2),
            split(1, 1f, false, 3, 4),
            split(2, 2f, true, 5, 6),
            leaf(10f),
            leaf(20f),
            leaf(30f),
            leaf(40f)
        );
        String json = Trees.booster("reg:squarederror", "\"0E0\"", 3, null, t);
        assertEquals(10f, predict(json, -1f, 0f, 0f));
        assertEquals(20f, predict(json, -1f, 1f, 0f));
        assertEquals(20f, predict(json, -1f, Float.NaN, 0f));
        assertEquals(30f, predict(json, 0f, 0f, 1.9f));
        assertEquals(40f, predict(json, 0f, 0f, 2f));
        assertEquals(30f, predict(json, 0f, 0f, Float.NaN));
        assertEquals(10f, predict(json, Float.NaN, 0f, 0f));
    }

    @Test
    void unbalancedTreesWithChildrenInAnyOrderWalkToTheirLeaves() {
        // The JSON lists a split's right child first and its children apart, and the leaves sit at
        // depths 1 and 3: the packed layout must still reach each leaf, and stop at a shallow one.
        // x0 < 0 ? (x1 < 1 ? (x2 < -2 ? 8 : 9) : 7) : 5; missing x0 -> right, x1 -> left, x2 -> right
        String t = Trees.tree(
            0,
            split(0, 0f, false, 3, 1),
            leaf(5f),
            leaf(7f),
            split(1, 1f, true, 4, 2),
            split(2, -2f, false, 6, 5),
            leaf(9f),
            leaf(8f)
        );
        XGBoostModel m = XGBoostModel.parse(Trees.booster("reg:squarederror", "\"0E0\"", 3, null, t));
        float nan = Float.NaN;
        float inf = Float.POSITIVE_INFINITY;
        float[][] rows = {
            { 1f, -9f, -9f },
            { nan, -9f, -9f },
            { -1f, 5f, 0f },
            { -1f, nan, -3f },
            { -1f, 0f, -2f },
            { -1f, 0f, nan },
            { -1f, 0f, -inf },
            { -inf, inf, 0f },
            { -0f, 0f, 0f } };
        float[] expected = { 5f, 5f, 7f, 8f, 9f, 9f, 8f, 7f, 5f };
        float[] flat = new float[rows.length * 3];
        for (int i = 0; i < rows.length; i++) {
            System.arraycopy(rows[i], 0, flat, i * 3, 3);
            assertEquals(expected[i], m.predict(rows[i], 0), "row " + i);
        }
        float[] out = new float[rows.length];
        m.predict(flat, 3, 0, rows.length, out);
        for (int i = 0; i < rows.length; i++) {
            assertEquals(expected[i], out[i], "row " + i + " in a block");
        }
    }

    @Test
    void treesAddUpWithTheBaseScore() {
        String t0 = Trees.stump(0, 0.5f, true);
        String t1 = Trees.tree(1, split(2, -1f, false, 1, 2), leaf(-0.25f), leaf(0.125f));
        String json = Trees.booster("rank:pairwise", "\"5E-1\"", 3, null, t0, t1);
        assertEquals(0.5f + 1.0f + 0.125f, predict(json, 0f, 0f, 0f));
        assertEquals(0.5f + 2.0f - 0.25f, predict(json, 1f, 0f, -2f));
        assertEquals(2, XGBoostModel.parse(json).numTrees());
    }

    @ParameterizedTest
    @ValueSource(strings = { "\"[5E-1]\"", "\"5E-1\"", "0.5", "\"[0.5]\"" })
    void baseScoreInEveryForm(String form) {
        String json = Trees.booster("rank:ndcg", form, 3, null, Trees.stump(0, 0.5f, true));
        assertEquals(0.5f, XGBoostModel.parse(json).baseScore());
        assertEquals(1.5f, predict(json, 0f, 0f, 0f));
    }

    @Test
    void logisticObjectivesStartFromTheLogitAndEndWithSigmoid() {
        // base_score 0.5 is a margin of 0; 0.25 a margin of -ln 3
        String half = Trees.booster("binary:logistic", "\"[5E-1]\"", 3, null, Trees.stump(0, 0.5f, true));
        assertEquals(1.0 / (1.0 + Math.exp(-1.0)), predict(half, 0f, 0f, 0f), 1e-7);
        assertEquals(1.0f, XGBoostModel.parse(half).margin(new float[] { 0f, 0f, 0f }, 0));
        String quarter = Trees.booster("reg:logistic", "\"2.5E-1\"", 3, null, Trees.stump(0, 0.5f, true));
        double margin = -Math.log(3) + 2.0;
        assertEquals(margin, XGBoostModel.parse(quarter).margin(new float[] { 1f, 0f, 0f }, 0), 1e-6);
        assertEquals(1.0 / (1.0 + Math.exp(-margin)), predict(quarter, 1f, 0f, 0f), 1e-7);
    }

    @Test
    void scoringRowsTreeByTreeGivesEachRowsOwnPrediction() {
        // Trees whose leaves do not add up exactly in float32, so that a different order of the sum would show.
        String t0 = Trees.tree(0, split(0, 0.5f, true, 1, 2), leaf(0.1f), leaf(-0.3f));
        String t1 = Trees.tree(1, split(1, 0f, false, 1, 2), leaf(1e-7f), leaf(0.7f));
        String t2 = Trees.tree(2, split(2, -1f, true, 1, 2), leaf(-1e8f), leaf(3.3e-3f));
        for (String objective : List.of("rank:ndcg", "binary:logistic")) {
            XGBoostModel m = XGBoostModel.parse(Trees.booster(objective, "\"2.5E-1\"", 3, null, t0, t1, t2));
            int n = 7;
            float[] rows = new float[n * 3];
            for (int i = 0; i < rows.length; i++) {
                rows[i] = i % 4 == 3 ? Float.NaN : (float) Math.sin(i) * 2;
            }
            float[] out = new float[n];
            java.util.Arrays.fill(out, 42f);
            m.predict(rows, 3, 1, 6, out);
            assertEquals(42f, out[0], "rows before [from] are left alone");
            assertEquals(42f, out[6], "rows from [to] on are left alone");
            for (int i = 1; i < 6; i++) {
                assertEquals(Float.floatToRawIntBits(m.predict(rows, i * 3)), Float.floatToRawIntBits(out[i]), objective + " row " + i);
            }
        }
    }

    @Test
    void rowsAreReadAtTheirOffset() {
        XGBoostModel m = XGBoostModel.parse(Trees.booster("rank:ndcg", "\"0E0\"", 3, null, Trees.stump(2, 0.5f, true)));
        float[] rows = { 0f, 0f, 0f, 0f, 0f, 9f };
        assertEquals(1.0f, m.predict(rows, 0));
        assertEquals(2.0f, m.predict(rows, 3));
    }

    @Test
    void thresholdsAreReadAsFloat32FromTheirText() {
        // 0.1 as float32 is 0.100000001490116...; a feature equal to it must go right.
        String json = Trees.booster("rank:ndcg", "\"0E0\"", 3, null, Trees.stump(0, 0.1f, true));
        assertEquals(2.0f, predict(json, 0.1f, 0f, 0f));
        assertEquals(1.0f, predict(json, Math.nextDown(0.1f), 0f, 0f));
    }

    private static String message(String json) {
        return assertThrows(IllegalArgumentException.class, () -> XGBoostModel.parse(json)).getMessage();
    }

    @Test
    void unsupportedModelsAreRefusedWithAReason() {
        String stump = Trees.stump(0, 0.5f, true);
        assertTrue(message(Trees.booster("multi:softmax", "\"5E-1\"", 3, null, stump)).contains("objective [multi:softmax] is not supported"));
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, null, stump).replace("\"name\":\"gbtree\"", "\"name\":\"dart\""))
            .contains("[dart] booster"));
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, null, stump).replace("\"num_class\":\"0\"", "\"num_class\":\"3\""))
            .contains("multi-class"));
        assertTrue(message(Trees.booster("rank:ndcg", "\"[5E-1,2E-1]\"", 3, null, stump)).contains("several values"));
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, null, stump.replace("\"split_type\":[0,0,0]", "\"split_type\":[1,0,0]")))
            .contains("categorical"));
    }

    @Test
    void malformedModelsAreRefusedWithAReason() {
        assertTrue(message("{\"learner\": ").contains("not valid JSON"));
        assertTrue(message("[1, 2]").contains("not a JSON object"));
        assertTrue(message("{\"learner\": {}}").contains("[objective]"));
        String ok = Trees.booster("rank:ndcg", "\"5E-1\"", 3, null, Trees.stump(0, 0.5f, true));
        assertTrue(message(ok.replace("\"base_score\":\"5E-1\",", "")).contains("base_score"));
        assertTrue(message(ok.replace("\"base_score\":\"5E-1\"", "\"base_score\":\"abc\"")).contains("not a number"));
        // a split on feature 5 of 3
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, null, Trees.stump(5, 0.5f, true))).contains("splits on feature 5"));
        // a child outside the tree, and a cycle
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, null,
            Trees.tree(0, split(0, 0.5f, true, 1, 7), leaf(1f), leaf(2f)))).contains("child 7"));
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, null,
            Trees.tree(0, split(0, 0.5f, true, 1, 2), leaf(1f), split(0, 0.5f, true, 1, 2)))).contains("twice"));
        // arrays that disagree in length
        assertTrue(message(ok.replace("\"split_indices\":[0,0,0]", "\"split_indices\":[0,0]")).contains("differ in length"));
        // names that disagree with num_feature
        assertTrue(message(Trees.booster("rank:ndcg", "\"5E-1\"", 3, List.of("a", "b"), Trees.stump(0, 0.5f, true)))
            .contains("names 2 features"));
    }
}
