package org.vecrank.elasticsearch;

/**
 * Model outputs to Lucene scores and back.
 *
 * <p>Lucene scores must not be negative, model outputs can be. The final score of a rescored hit
 * is {@code g(model score)} with {@code g(x) = 1 + x} for {@code x >= 0} and {@code 1 / (1 - x)} for
 * {@code x < 0}: continuous, strictly increasing, positive, so the order is the model's. Hits past
 * the rescore window get scores below {@link Float#MIN_NORMAL} that keep their first-pass order.
 */
public final class Scores {

    private Scores() {}

    /** g: the Lucene score for a model score. */
    public static float toScore(float modelScore) {
        double x = modelScore;
        float s = (float) (x >= 0 ? 1.0 + x : 1.0 / (1.0 - x));
        // Only |x| > ~8.5e37 would fall below MIN_NORMAL, where the scores of unrescored hits live.
        return Math.max(s, Float.MIN_NORMAL);
    }

    /** g's inverse: the model score for a Lucene score of a rescored hit. */
    public static double toModelScore(double score) {
        if (!(score > 0)) {
            throw new IllegalArgumentException("score must be > 0, got " + score);
        }
        return score >= 1 ? score - 1 : 1 - 1 / score;
    }

    /**
     * The score of the unrescored hit at position {@code i} (0-based) among {@code n} hits past the
     * window: n - i times the smallest positive float, so below every rescored hit and in their order.
     */
    static float pastWindowScore(int i, int n) {
        return Float.MIN_VALUE * (n - i);
    }
}
