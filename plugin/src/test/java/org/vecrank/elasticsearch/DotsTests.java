package org.vecrank.elasticsearch;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

class DotsTests {

    /** The sequential dot in double, the definition every implementation must equal bit for bit. */
    private static double sequential(float[] a, float[] b) {
        double s = 0;
        for (int j = 0; j < a.length; j++) {
            s += (double) a[j] * b[j];
        }
        return s;
    }

    private static float[][] gaussian(Random random, int n, int dims) {
        float[][] out = new float[n][dims];
        for (float[] row : out) {
            for (int j = 0; j < dims; j++) {
                row[j] = (float) random.nextGaussian();
            }
        }
        return out;
    }

    @Test
    void theVectorApiIsUsedWhereTheJvmHasIt() {
        assertTrue(Dots.VECTOR_API, "surefire runs with --add-modules jdk.incubator.vector, as Elasticsearch does");
        assertInstanceOf(VectorDots.class, Dots.of(new float[][] { { 1f } }));
    }

    @Test
    void everyImplementationEqualsTheSequentialDotBitForBit() {
        Random random = new Random(7);
        // k below, at and past a register's lanes, and dimensions that are not a multiple of anything
        for (int[] shape : new int[][] { { 1, 3 }, { 3, 5 }, { 4, 16 }, { 9, 17 }, { 20, 384 } }) {
            int k = shape[0];
            int dims = shape[1];
            float[][] q = gaussian(random, k, dims);
            float[][] docs = gaussian(random, 25, dims);
            docs[0][dims - 1] = Float.MAX_VALUE; // large products are exact in double too
            for (Dots dots : new Dots[] { new Dots.Scalar(q), new VectorDots(q) }) {
                double[] out = new double[k + 2];
                out[k] = 42; // past k: untouched
                out[k + 1] = 43;
                for (float[] doc : docs) {
                    dots.compute(doc, out);
                    for (int i = 0; i < k; i++) {
                        assertEquals(
                            Double.doubleToRawLongBits(sequential(doc, q[i])),
                            Double.doubleToRawLongBits(out[i]),
                            dots.getClass().getSimpleName() + " k=" + k + " dims=" + dims + " vector " + i
                        );
                    }
                    assertEquals(42, out[k]);
                    assertEquals(43, out[k + 1]);
                }
            }
        }
    }
}
