package org.vecrank.elasticsearch;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link Dots} with the Vector API: the k vectors in blocks of as many as a register holds doubles,
 * each block stored component by component; a block's k sums stay in one register while the doc's
 * components stream past (a broadcast, a multiply and an add per component, no fused multiply-add:
 * the products of float32 values are exact in double and each addition rounds once, as in the
 * sequential loop). Loaded only when {@link Dots#VECTOR_API} holds.
 */
final class VectorDots extends Dots {
    private static final VectorSpecies<Double> SPECIES = DoubleVector.SPECIES_PREFERRED;

    private final int lanes = SPECIES.length();
    private final int blocks;
    /** Block b, component j, lane l (vector b * lanes + l, zero past k) at {@code (b * dims + j) * lanes + l}. */
    private final double[] blocked;
    private final double[] sums;

    VectorDots(float[][] q) {
        super(q);
        blocks = (k + lanes - 1) / lanes;
        blocked = new double[blocks * dims * lanes];
        for (int i = 0; i < k; i++) {
            int b = i / lanes;
            int l = i % lanes;
            for (int j = 0; j < dims; j++) {
                blocked[(b * dims + j) * lanes + l] = q[i][j];
            }
        }
        sums = new double[blocks * lanes];
    }

    @Override
    void compute(float[] v, double[] out) {
        double[] c = blocked;
        for (int b = 0; b < blocks; b++) {
            DoubleVector acc = DoubleVector.zero(SPECIES);
            int at = b * dims * lanes;
            for (int j = 0; j < dims; j++, at += lanes) {
                acc = acc.add(DoubleVector.broadcast(SPECIES, v[j]).mul(DoubleVector.fromArray(SPECIES, c, at)));
            }
            acc.intoArray(sums, b * lanes);
        }
        System.arraycopy(sums, 0, out, 0, k);
    }
}
