package org.vecrank.elasticsearch;

import java.util.Arrays;

/**
 * The dot products of a doc's vector with k fixed vectors (a param's), all at once: each in double
 * over the float32 components, summed in component order, so each equals the sequential
 * {@code s += (double) a[j] * b[j]} bit for bit, however it is computed.
 *
 * <p>{@link #of} picks the Vector API ({@link VectorDots}) when the JVM has the
 * {@code jdk.incubator.vector} module, as Elasticsearch's own launcher adds it; otherwise the
 * portable loop of {@link Scalar}, which the JIT vectorizes less well (measured on 20 vectors of 384
 * dimensions against 450 docs: 1.3–1.4 ms per window for the loop, 0.6–0.7 for the Vector API).
 */
abstract class Dots {
    /** Whether this JVM resolved the incubating Vector API module. */
    static final boolean VECTOR_API = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();

    final int k;
    final int dims;

    Dots(float[][] q) {
        this.k = q.length;
        this.dims = q[0].length;
    }

    /** The fastest implementation this JVM runs for {@code q} (k vectors of equal length). */
    static Dots of(float[][] q) {
        return VECTOR_API ? new VectorDots(q) : new Scalar(q);
    }

    /** Writes the dots of {@code v} with the k vectors into {@code out[0..k)}. */
    abstract void compute(float[] v, double[] out);

    /** The k vectors transposed (component j of vector i at {@code j * k + i}): the inner loop updates k independent sums. */
    static final class Scalar extends Dots {
        private final float[] columns;

        Scalar(float[][] q) {
            super(q);
            columns = new float[dims * k];
            for (int i = 0; i < k; i++) {
                for (int j = 0; j < dims; j++) {
                    columns[j * k + i] = q[i][j];
                }
            }
        }

        @Override
        void compute(float[] v, double[] out) {
            float[] c = columns;
            int n = k;
            Arrays.fill(out, 0, n, 0);
            for (int j = 0; j < dims; j++) {
                double x = v[j];
                int at = j * n;
                for (int i = 0; i < n; i++) {
                    out[i] += x * c[at + i];
                }
            }
        }
    }
}
