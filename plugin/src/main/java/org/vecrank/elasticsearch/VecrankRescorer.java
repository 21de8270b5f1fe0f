package org.vecrank.elasticsearch;

import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.ReaderUtil;
import org.apache.lucene.search.Explanation;
import org.apache.lucene.search.IndexSearcher;
import org.apache.lucene.search.ScoreDoc;
import org.apache.lucene.search.TopDocs;
import org.apache.lucene.util.BytesRef;
import org.elasticsearch.search.rescore.RescoreContext;
import org.elasticsearch.search.rescore.Rescorer;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Scores the top {@code window_size} hits of a shard with the model: features per segment from doc
 * values, vectors and params, the tree ensemble, then {@link Scores#toScore}. Hits are visited in
 * doc id order (forward reads), re-sorted by the new score, equal scores by item id
 * ({@link #byScoreThenKey}); hits past the window follow, in their first-pass order.
 */
final class VecrankRescorer implements Rescorer {

    static final VecrankRescorer INSTANCE = new VecrankRescorer();

    /** The description that starts the explanation of a rescored hit; vecrank's Python reads it. */
    static final String EXPLANATION_PREFIX = "vecrank model [";
    static final String MODEL_SCORE = "model score";
    static final String FEATURES = "features";
    static final String FIRST_PASS = "first pass score";

    private static final int CHECK_CANCELLED_EVERY = 64;
    /**
     * Rows the model scores tree by tree at a time, between cancellation checks: their widened
     * features (17 KB for 33 columns) stay in the first-level cache through all the trees (1.2 ms
     * per 450-row window in blocks of 64 or 128, 1.4–1.6 in blocks of 256 or 450, on 424 trees).
     */
    private static final int PREDICT_BLOCK = 64;

    /** What the rescore phase needs from the builder: the model and how to compute its features on this shard. */
    static final class Context extends RescoreContext {
        final RankModel model;
        final FeaturePlan plan;
        /** How many of the best hits {@link #rescore} returns; null: all. */
        final Integer keep;
        /**
         * The {@code rank} features' values by top-level doc id (one per {@link FeaturePlan#rankColumns()}),
         * from this context's rescore or, when explain runs in a fetch phase of its own, recomputed
         * from the window's doc ids; null until then, or when the plan has no rank features.
         */
        private volatile Ranks ranks;

        Context(int windowSize, RankModel model, FeaturePlan plan) {
            this(windowSize, model, plan, null);
        }

        Context(int windowSize, RankModel model, FeaturePlan plan, Integer keep) {
            super(windowSize, INSTANCE);
            this.model = model;
            this.plan = plan;
            this.keep = keep;
        }
    }

    /** @param recomputed true when computed for explain without the first-pass scores */
    private record Ranks(Map<Integer, float[]> byDoc, boolean recomputed) {}

    private VecrankRescorer() {}

    @Override
    public TopDocs rescore(TopDocs topDocs, IndexSearcher searcher, RescoreContext rescoreContext) throws IOException {
        if (topDocs == null || topDocs.scoreDocs.length == 0) {
            return topDocs;
        }
        Context context = (Context) rescoreContext;
        ScoreDoc[] all = topDocs.scoreDocs;
        ScoreDoc[] window = Arrays.copyOf(all, Math.min(all.length, context.getWindowSize()));
        int n = window.length;
        Set<Integer> rescored = new HashSet<>(n * 2);
        for (ScoreDoc hit : window) {
            rescored.add(hit.doc);
        }
        context.setRescoredDocs(rescored);

        Arrays.sort(window, Comparator.comparingInt(h -> h.doc));
        int width = context.plan.size();
        BytesRef[] keys = context.plan.hasTieKeys() ? new BytesRef[n] : null;
        float[] rows = extractWindow(window, searcher, context, false, keys);
        XGBoostModel booster = context.model.booster();
        float[] predictions = new float[n];
        for (int from = 0; from < n; from += PREDICT_BLOCK) {
            context.checkCancellation();
            booster.predict(rows, width, from, Math.min(n, from + PREDICT_BLOCK), predictions);
        }
        for (int i = 0; i < n; i++) {
            window[i].score = Scores.toScore(predictions[i]);
        }

        ScoreDoc[] out = new ScoreDoc[all.length];
        System.arraycopy(byScoreThenKey(window, keys), 0, out, 0, n);
        int past = all.length - n;
        for (int i = 0; i < past; i++) {
            ScoreDoc hit = all[n + i];
            hit.score = Scores.pastWindowScore(i, past);
            out[n + i] = hit;
        }
        if (context.keep != null && context.keep < out.length) {
            // Elasticsearch fetches every hit returned here, even past the search's size.
            out = Arrays.copyOf(out, context.keep);
        }
        return new TopDocs(topDocs.totalHits, out);
    }

    /**
     * The window by model score, highest first, equal scores by the tie key (the item id, as Python's
     * {@code rank_order} breaks them), then doc id. Merging shard results keeps each shard's order,
     * so on a single-shard index the response has this order; across shards, equal scores from
     * different shards are ordered by shard.
     */
    static ScoreDoc[] byScoreThenKey(ScoreDoc[] window, BytesRef[] keys) {
        int n = window.length;
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> {
            int byScore = Float.compare(window[b].score, window[a].score);
            if (byScore != 0) {
                return byScore;
            }
            int byKey = keys == null ? 0 : FeaturePlan.compareTieKeys(keys[a], keys[b]);
            return byKey != 0 ? byKey : Integer.compare(window[a].doc, window[b].doc);
        });
        ScoreDoc[] sorted = new ScoreDoc[n];
        for (int i = 0; i < n; i++) {
            sorted[i] = window[order[i]];
        }
        return sorted;
    }

    /**
     * The feature rows of {@code window} (sorted by doc id), segment by segment, then the second pass
     * that ranks the window for the {@code rank} features, whose values are also kept in the context
     * ({@code forExplain}: recomputed for explain, the first-pass scores being NaN), and last counts
     * for the {@code count} features (explain counts its own row again, from these ranks).
     */
    private static float[] extractWindow(ScoreDoc[] window, IndexSearcher searcher, Context context, boolean forExplain,
        BytesRef[] tieKeys) throws IOException {
        int n = window.length;
        int width = context.plan.size();
        float[] rows = new float[n * width];
        BytesRef[] keys = tieKeys != null ? tieKeys : context.plan.hasTieKeys() ? new BytesRef[n] : null;
        FeaturePlan.Extractor extractor = context.plan.open();
        List<LeafReaderContext> leaves = searcher.getIndexReader().leaves();
        int leafIndex = -1;
        int leafEnd = 0;
        LeafReaderContext leaf = null;
        for (int i = 0; i < n; i++) {
            if (i % CHECK_CANCELLED_EVERY == 0) {
                context.checkCancellation();
            }
            ScoreDoc hit = window[i];
            if (hit.doc >= leafEnd) {
                do {
                    leaf = leaves.get(++leafIndex);
                    leafEnd = leaf.docBase + leaf.reader().maxDoc();
                } while (hit.doc >= leafEnd);
                extractor.setNextReader(leaf);
            }
            extractor.extract(hit.doc - leaf.docBase, hit.score, rows, i * width);
            if (keys != null) {
                keys[i] = extractor.tieKey(hit.doc - leaf.docBase);
            }
        }
        if (context.plan.hasRanks()) {
            context.plan.rank(rows, n, keys);
            int[] columns = context.plan.rankColumns();
            Map<Integer, float[]> byDoc = new HashMap<>(n * 2);
            for (int i = 0; i < n; i++) {
                float[] values = new float[columns.length];
                for (int r = 0; r < columns.length; r++) {
                    values[r] = rows[i * width + columns[r]];
                }
                byDoc.put(window[i].doc, values);
            }
            context.ranks = new Ranks(byDoc, forExplain);
        }
        if (context.plan.hasCounts()) {
            context.plan.count(rows, n);
        }
        return rows;
    }

    /**
     * The rank features' values for explain: those of this context's rescore when it ran here (a search
     * of one shard fetches in the query's context); otherwise, recomputed from the window's doc ids,
     * which Elasticsearch hands to the fetch phase. The first-pass scores are not among them: a rank
     * of the {@code score} source is then unknown (NaN). Null when the window is unknown.
     */
    private static Ranks ranksForExplain(IndexSearcher searcher, Context context) throws IOException {
        Ranks ranks = context.ranks;
        if (ranks != null || context.getRescoredDocs() == null) {
            return ranks;
        }
        int[] docs = context.getRescoredDocs().stream().mapToInt(Integer::intValue).sorted().toArray();
        ScoreDoc[] window = new ScoreDoc[docs.length];
        for (int i = 0; i < docs.length; i++) {
            window[i] = new ScoreDoc(docs[i], Float.NaN);
        }
        extractWindow(window, searcher, context, true, null);
        return context.ranks;
    }

    @Override
    public Explanation explain(int topLevelDocId, IndexSearcher searcher, RescoreContext rescoreContext, Explanation sourceExplanation)
        throws IOException {
        Context context = (Context) rescoreContext;
        if (sourceExplanation == null) {
            return Explanation.noMatch("no match found");
        }
        if (context.getRescoredDocs() != null && context.isRescored(topLevelDocId) == false) {
            return Explanation.match(
                sourceExplanation.getValue(),
                "not rescored by vecrank model " + context.model.describe() + ": past the rescore window, ranked after it in first-pass order",
                sourceExplanation
            );
        }
        List<LeafReaderContext> leaves = searcher.getIndexReader().leaves();
        LeafReaderContext leaf = leaves.get(ReaderUtil.subIndex(topLevelDocId, leaves));
        float firstPass = sourceExplanation.getValue().floatValue();
        int width = context.plan.size();
        float[] row = new float[width];
        FeaturePlan.Extractor extractor = context.plan.open();
        extractor.setNextReader(leaf);
        extractor.extract(topLevelDocId - leaf.docBase, firstPass, row, 0);
        String[] notes = new String[width];
        if (context.plan.hasRanks()) {
            Ranks ranks = ranksForExplain(searcher, context);
            float[] values = ranks == null ? null : ranks.byDoc().get(topLevelDocId);
            int[] columns = context.plan.rankColumns();
            for (int r = 0; r < columns.length; r++) {
                if (values == null) {
                    row[columns[r]] = Float.NaN;
                    notes[columns[r]] = RANK_UNKNOWN_WINDOW;
                } else if (ranks.recomputed() && context.plan.rankOfFirstPass(r)) {
                    row[columns[r]] = Float.NaN;
                    notes[columns[r]] = RANK_UNKNOWN_FIRST_PASS;
                } else {
                    row[columns[r]] = values[r];
                }
            }
        }
        if (context.plan.hasCounts()) {
            // A count is a function of its row, now complete but for the ranks explain does not know:
            // a count of one of those is not known either.
            int[] columns = context.plan.countColumns();
            for (int c = 0; c < columns.length; c++) {
                String unknownRank = null;
                for (int of : context.plan.countOfColumns(c)) {
                    if (notes[of] != null) {
                        unknownRank = context.model.features().get(of).name();
                        break;
                    }
                }
                if (unknownRank == null) {
                    row[columns[c]] = context.plan.countValue(row, 0, c);
                } else {
                    row[columns[c]] = Float.NaN;
                    notes[columns[c]] = countUnknown(unknownRank);
                }
            }
        }
        RankModel model = context.model;
        float modelScore = model.booster().predict(row, 0);
        float score = Scores.toScore(modelScore);

        List<Explanation> features = new ArrayList<>(width);
        for (int i = 0; i < width; i++) {
            features.add(featureExplanation(model.features().get(i).name(), row[i], notes[i]));
        }
        return Explanation.match(
            score,
            EXPLANATION_PREFIX + model.modelId() + "] version [" + model.version() + "] (" + model.objective()
                + "): score = g(model score), g(x) = 1 + x for x >= 0, 1 / (1 - x) for x < 0",
            Explanation.match(modelScore, MODEL_SCORE + " " + bits(modelScore)),
            Explanation.match(width, FEATURES + " (" + width + ", in the model's order)", features),
            Explanation.match(sourceExplanation.getValue(), FIRST_PASS, sourceExplanation)
        );
    }

    /** What a rank feature's line adds when explain cannot know the rank the rescore used (the model score then takes it as missing). */
    static final String RANK_UNKNOWN_WINDOW = "[rank not known to this explanation: it has no rescore window]";
    static final String RANK_UNKNOWN_FIRST_PASS = "[rank not known to this explanation: it ranks by the first-pass score, "
        + "which a fetch phase of its own does not have]";

    /** What a count feature's line adds when it counts a rank that explain does not know (see {@link #RANK_UNKNOWN_WINDOW}). */
    static String countUnknown(String rank) {
        return "[count not known to this explanation: it counts [" + rank + "], whose rank is not known to it]";
    }

    /** "feature [ctr] = 0.0123 (float32 0x3c4985f0)"; a missing value explains as 0 with "= NaN (missing)". */
    static Explanation featureExplanation(String name, float value) {
        return featureExplanation(name, value, null);
    }

    /** As {@link #featureExplanation(String, float)}, with a note after the bits when {@code note} is not null. */
    static Explanation featureExplanation(String name, float value, String note) {
        String tail = note == null ? "" : " " + note;
        if (Float.isNaN(value)) {
            return Explanation.match(0f, "feature [" + name + "] = NaN (missing) " + bits(value) + tail);
        }
        return Explanation.match(value, "feature [" + name + "] = " + value + " " + bits(value) + tail);
    }

    /** The exact float32 behind a printed value, for readers that must not round twice. */
    static String bits(float value) {
        return String.format(Locale.ROOT, "(float32 0x%08x)", Float.floatToRawIntBits(value));
    }
}
