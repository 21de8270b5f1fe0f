package org.vecrank.elasticsearch;

import org.apache.lucene.index.DocValues;
import org.apache.lucene.index.DocValuesType;
import org.apache.lucene.index.FieldInfo;
import org.apache.lucene.index.FloatVectorValues;
import org.apache.lucene.index.KnnVectorValues;
import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.NumericDocValues;
import org.apache.lucene.index.SortedDocValues;
import org.apache.lucene.index.SortedSetDocValues;
import org.apache.lucene.index.VectorEncoding;
import org.apache.lucene.util.BytesRef;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.fielddata.IndexFieldData;
import org.elasticsearch.index.fielddata.IndexNumericFieldData;
import org.elasticsearch.index.fielddata.IndexOrdinalsFieldData;
import org.elasticsearch.index.fielddata.SortedNumericDoubleValues;
import org.elasticsearch.index.mapper.MappedFieldType;
import org.elasticsearch.index.query.SearchExecutionContext;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * How one shard computes a model's features: the fields resolved against the shard's mapping and
 * the request's params read once. {@link #open()} gives an {@link Extractor} that walks segments;
 * the features of the {@code rank} and {@code count} sources are filled afterwards, for the whole
 * window, by {@link #rank} and then {@link #count}.
 *
 * <p>Every feature is computed in double and stored as float32, the type XGBoost compares in.
 */
final class FeaturePlan {

    /** One feature's values for the documents of the current segment. */
    interface Column {
        void setNextReader(LeafReaderContext leaf) throws IOException;

        /** The value for segment-local {@code doc}, whose first-pass score is {@code score}. */
        double value(int doc, float score) throws IOException;
    }

    private interface ColumnFactory {
        Column open();

        /**
         * A column for one {@link Extractor}; {@code shared} is that extractor's, for columns that
         * read the same values (the cosines of one field against one param's vectors) to compute them once.
         */
        default Column open(Map<Object, Object> shared) {
            return open();
        }

        /** A factory whose columns share what {@code make} keeps in {@code shared} (alone, a map of its own). */
        static ColumnFactory sharing(Function<Map<Object, Object>, Column> make) {
            return new ColumnFactory() {
                @Override
                public Column open() {
                    return open(new HashMap<>());
                }

                @Override
                public Column open(Map<Object, Object> shared) {
                    return make.apply(shared);
                }
            };
        }
    }

    /** The keyword field whose value breaks ties between equal values of a {@code rank} feature's {@code of}. */
    static final String RANK_TIE_FIELD = "item_id";

    /** The suffix of the float doc values where Elasticsearch keeps a normalized vector's magnitude. */
    static final String MAGNITUDE_SUFFIX = "._magnitude";

    private final List<ColumnFactory> factories;
    /** The columns of the {@code rank} features and, for each, the column it ranks by. */
    private final int[] rankColumns;
    private final int[] rankOfColumns;
    /** For each rank feature: true when its {@code of} is the first-pass score (explain cannot recompute it). */
    private final boolean[] rankOfFirstPass;
    /** The columns of the {@code count} features, for each the columns it counts and their limits. */
    private final int[] countColumns;
    private final int[][] countOfColumns;
    private final double[][] countLimits;
    /** The Lucene field of {@link #RANK_TIE_FIELD}; null when no feature ranks or the index does not map it. */
    private final String tieField;
    private final String tieFeature;

    FeaturePlan(RankModel model, Map<String, Object> rawParams, SearchExecutionContext context) {
        if (context != null) {
            checkShards(model, context.getIndexSettings());
        }
        QueryParams params = new QueryParams(rawParams);
        long nowMs = params.nowMs(context == null ? System.currentTimeMillis() : context.nowInMillis());
        List<FeatureDef> defs = model.features();
        List<ColumnFactory> out = new ArrayList<>(defs.size());
        for (FeatureDef def : defs) {
            try {
                out.add(factory(def, params, context, nowMs));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("feature [" + def.name() + "] of model " + model.describe() + ": " + e.getMessage(), e);
            }
        }
        this.factories = out;

        int[] of = FeatureDef.checkRankReferences(defs);
        List<Integer> ranks = new ArrayList<>();
        for (int i = 0; i < of.length; i++) {
            if (of[i] >= 0) {
                ranks.add(i);
            }
        }
        rankColumns = ranks.stream().mapToInt(Integer::intValue).toArray();
        rankOfColumns = new int[rankColumns.length];
        rankOfFirstPass = new boolean[rankColumns.length];
        boolean firstPassMissing = params.flag(QueryParams.FIRST_PASS_MISSING);
        for (int r = 0; r < rankColumns.length; r++) {
            rankOfColumns[r] = of[rankColumns[r]];
            rankOfFirstPass[r] = defs.get(rankOfColumns[r]).source() == FeatureDef.Source.SCORE && firstPassMissing == false;
        }

        int[][] counted = FeatureDef.checkCountReferences(defs);
        List<Integer> counts = new ArrayList<>();
        for (int i = 0; i < counted.length; i++) {
            if (counted[i] != null) {
                counts.add(i);
            }
        }
        countColumns = counts.stream().mapToInt(Integer::intValue).toArray();
        countOfColumns = new int[countColumns.length][];
        countLimits = new double[countColumns.length][];
        for (int c = 0; c < countColumns.length; c++) {
            countOfColumns[c] = counted[countColumns[c]];
            countLimits[c] = defs.get(countColumns[c]).limits().stream().mapToDouble(Double::doubleValue).toArray();
        }
        if (rankColumns.length == 0) {
            // No rank feature needs the key, but the final order breaks ties of the model score by it
            // when the index has it (as Python does); without it, ties stay in doc id order.
            tieFeature = null;
            String key;
            try {
                key = keywordField(RANK_TIE_FIELD, "[" + RANK_TIE_FIELD + "]", "it must be a keyword field", context);
            } catch (IllegalArgumentException e) {
                key = null;
            }
            tieField = key;
        } else {
            tieFeature = defs.get(rankColumns[0]).name();
            try {
                tieField = keywordField(RANK_TIE_FIELD, "[" + RANK_TIE_FIELD + "], which breaks ties of source [rank],",
                    "it must be a keyword field", context);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("feature [" + tieFeature + "] of model " + model.describe() + ": " + e.getMessage(), e);
            }
        }
    }

    /**
     * Ranks are computed within one shard's rescore window, so a model with a {@code rank} feature
     * would rank differently on every shard of an index of several: refused.
     */
    static void checkShards(RankModel model, IndexSettings settings) {
        FeatureDef rank = model.firstRankFeature();
        if (rank != null && settings.getNumberOfShards() > 1) {
            throw new IllegalArgumentException(
                "model " + model.describe() + " has feature [" + rank.name() + "] of source [rank], which ranks within one shard's "
                    + "rescore window: it rescores indices of one shard only, and index [" + settings.getIndex().getName() + "] has "
                    + settings.getNumberOfShards() + " shards"
            );
        }
    }

    int size() {
        return factories.size();
    }

    /** True when the model has {@code rank} features: the rescorer then reads tie keys and calls {@link #rank}. */
    boolean hasRanks() {
        return rankColumns.length > 0;
    }

    /** True when the rescorer reads each hit's {@link #RANK_TIE_FIELD}: for the rank features, and to order equal model scores. */
    boolean hasTieKeys() {
        return tieField != null;
    }

    int[] rankColumns() {
        return rankColumns;
    }

    /** True when rank feature {@code r} (an index into {@link #rankColumns()}) ranks by the first-pass score. */
    boolean rankOfFirstPass(int r) {
        return rankOfFirstPass[r];
    }

    /** True when the model has {@code count} features: the rescorer then calls {@link #count} after {@link #rank}. */
    boolean hasCounts() {
        return countColumns.length > 0;
    }

    int[] countColumns() {
        return countColumns;
    }

    /** The columns that count feature {@code c} (an index into {@link #countColumns()}) counts, in the order of its {@code of}. */
    int[] countOfColumns(int c) {
        return countOfColumns[c];
    }

    Extractor open() {
        Column[] columns = new Column[factories.size()];
        Map<Object, Object> shared = new HashMap<>();
        for (int i = 0; i < columns.length; i++) {
            columns[i] = factories.get(i).open(shared);
        }
        KeywordKeys ties = tieField == null ? null : KeywordKeys.shared(shared, tieField,
            tieFeature != null ? "feature [" + tieFeature + "]: [" + tieField + "], which breaks ties of source [rank],"
                : "[" + tieField + "], which breaks ties of the model score,",
            "it must be a keyword field");
        return new Extractor(columns, ties);
    }

    /** Fills rows of feature values, one segment at a time (documents in increasing order within one). */
    static final class Extractor {
        private final Column[] columns;
        private final KeywordKeys ties;

        Extractor(Column[] columns, KeywordKeys ties) {
            this.columns = columns;
            this.ties = ties;
        }

        void setNextReader(LeafReaderContext leaf) throws IOException {
            for (Column c : columns) {
                c.setNextReader(leaf);
            }
            if (ties != null) {
                ties.setNextReader(leaf);
            }
        }

        /**
         * The row of {@code doc}; a {@code rank} or {@code count} feature's place holds NaN until
         * {@link FeaturePlan#rank} or {@link FeaturePlan#count} fills it.
         */
        void extract(int doc, float score, float[] out, int offset) throws IOException {
            for (int i = 0; i < columns.length; i++) {
                out[offset + i] = (float) columns[i].value(doc, score);
            }
        }

        /** The document's {@link #RANK_TIE_FIELD} (a copy), or null when it has none or the plan reads none. */
        BytesRef tieKey(int doc) throws IOException {
            BytesRef key = ties == null ? null : ties.key(doc);
            return key == null ? null : BytesRef.deepCopyOf(key);
        }
    }

    /**
     * The second pass: fills every {@code rank} feature of {@code n} rows (the rescore window, in doc id
     * order) with the 1-based rank of the row's {@code of} value among the rows, highest first. Equal
     * values (0 and -0 are equal) are ordered by the tie key, ascending in unsigned UTF-8 byte order
     * (code point order, as Python compares {@code str}), a missing key after every present one, then by
     * doc id. A NaN {@code of} gets NaN and takes no place.
     *
     * @param keys each row's tie key (null entries: missing), or null when no row has one
     */
    void rank(float[] rows, int n, BytesRef[] keys) {
        int width = size();
        Integer[] order = new Integer[n];
        for (int r = 0; r < rankColumns.length; r++) {
            int col = rankColumns[r];
            int of = rankOfColumns[r];
            int m = 0;
            for (int i = 0; i < n; i++) {
                rows[i * width + col] = Float.NaN;
                if (Float.isNaN(rows[i * width + of]) == false) {
                    order[m++] = i;
                }
            }
            Arrays.sort(order, 0, m, (a, b) -> {
                float va = rows[a * width + of];
                float vb = rows[b * width + of];
                if (va != vb) {
                    return va > vb ? -1 : 1;
                }
                int byKey = compareTieKeys(keys == null ? null : keys[a], keys == null ? null : keys[b]);
                return byKey != 0 ? byKey : Integer.compare(a, b);
            });
            for (int p = 0; p < m; p++) {
                rows[order[p] * width + col] = p + 1;
            }
        }
    }

    /**
     * The last step of the second pass, after {@link #rank}: fills every {@code count} feature of {@code n}
     * rows with {@link #countValue}.
     */
    void count(float[] rows, int n) {
        int width = size();
        for (int i = 0; i < n; i++) {
            for (int c = 0; c < countColumns.length; c++) {
                rows[i * width + countColumns[c]] = countValue(rows, i * width, c);
            }
        }
    }

    /**
     * Count feature {@code c} (an index into {@link #countColumns()}) of the row at {@code offset}: how many
     * of the features it counts have a float32 value at most their limit (compared in double, exactly); a
     * NaN value never counts. A whole number, exact in float32.
     */
    float countValue(float[] rows, int offset, int c) {
        int[] of = countOfColumns[c];
        double[] limits = countLimits[c];
        int count = 0;
        for (int k = 0; k < of.length; k++) {
            float v = rows[offset + of[k]];
            if (Float.isNaN(v) == false && v <= limits[k]) {
                count++;
            }
        }
        return count;
    }

    /** Present keys first, in unsigned byte order of their UTF-8 (the order of their code points); missing keys last. */
    static int compareTieKeys(BytesRef a, BytesRef b) {
        if (a == null || b == null) {
            return a == null ? (b == null ? 0 : 1) : -1;
        }
        return a.compareTo(b);
    }

    // ---------------------------------------------------------------------------------------------

    private static ColumnFactory factory(FeatureDef def, QueryParams params, SearchExecutionContext context, long nowMs) {
        switch (def.source()) {
            case SCORE:
                if (params.flag(QueryParams.FIRST_PASS_MISSING)) {
                    return () -> constant(Double.NaN);
                }
                return () -> new Column() {
                    @Override
                    public void setNextReader(LeafReaderContext leaf) {}

                    @Override
                    public double value(int doc, float score) {
                        return def.transform(score, nowMs);
                    }
                };
            case PARAM: {
                double v = params.scalar(def.param());
                return () -> constant(v);
            }
            case FIELD:
                return numericFactory(def, context, nowMs);
            case COSINE:
            case COSINE_MAX:
            case COSINE_MEAN:
            case DOT:
                return vectorFactory(def, params, context);
            case OVERLAP:
                return overlapFactory(def, params, context);
            case PARAM_MAP:
                return paramMapFactory(def, params, context);
            case RANK:
                // Filled by rank() once the window's other features are known.
                return () -> constant(Double.NaN);
            case COUNT:
                // Filled by count() after rank(): it may count rank features.
                return () -> constant(Double.NaN);
            default:
                throw new IllegalStateException("unknown source " + def.source());
        }
    }

    private static Column constant(double v) {
        return new Column() {
            @Override
            public void setNextReader(LeafReaderContext leaf) {}

            @Override
            public double value(int doc, float score) {
                return v;
            }
        };
    }

    /** The doc values of a mapped field; a field that has none is an error naming it. */
    private static IndexFieldData<?> fieldData(String field, MappedFieldType ft, SearchExecutionContext context) {
        try {
            return context.getForField(ft, MappedFieldType.FielddataOperation.SEARCH);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("field [" + field + "] has no doc values to read: " + e.getMessage(), e);
        }
    }

    /** The field's type on this shard, or null when the index does not map it (every value is then missing). */
    private static MappedFieldType fieldType(String field, SearchExecutionContext context) {
        if (context == null || context.isFieldMapped(field) == false) {
            return null;
        }
        return context.getFieldType(field);
    }

    private static ColumnFactory numericFactory(FeatureDef def, SearchExecutionContext context, long nowMs) {
        MappedFieldType ft = fieldType(def.field(), context);
        if (ft == null) {
            return () -> constant(Double.NaN);
        }
        IndexFieldData<?> fd = fieldData(def.field(), ft, context);
        if (!(fd instanceof IndexNumericFieldData numeric)) {
            throw new IllegalArgumentException(
                "field [" + def.field() + "] is a [" + ft.typeName() + "] field; source [field] needs a numeric, date or boolean field"
            );
        }
        IndexNumericFieldData.NumericType type = numeric.getNumericType();
        boolean nanos = type == IndexNumericFieldData.NumericType.DATE_NANOSECONDS;
        if (def.transform() == FeatureDef.Transform.DAYS_SINCE
            && type != IndexNumericFieldData.NumericType.DATE
            && nanos == false
            && type != IndexNumericFieldData.NumericType.LONG) {
            throw new IllegalArgumentException(
                "transform [days_since] needs a date or long field (epoch ms); [" + def.field() + "] is [" + ft.typeName() + "]"
            );
        }
        return () -> new Column() {
            private SortedNumericDoubleValues values;

            @Override
            public void setNextReader(LeafReaderContext leaf) {
                values = numeric.load(leaf).getDoubleValues();
            }

            @Override
            public double value(int doc, float score) throws IOException {
                // One value or none: a multi-valued field reads as missing, as in vecrank's Python features.
                if (values == null || values.advanceExact(doc) == false || values.docValueCount() != 1) {
                    return Double.NaN;
                }
                double v = values.nextValue();
                if (nanos) {
                    v = v / 1_000_000.0;
                }
                return def.transform(v, nowMs);
            }
        };
    }

    /**
     * {@code cosine}, {@code cosine_max}, {@code cosine_mean} and {@code dot}: the doc's float vector
     * (Lucene's {@link FloatVectorValues}; quantized formats keep the raw floats) against the param's.
     */
    private static ColumnFactory vectorFactory(FeatureDef def, QueryParams params, SearchExecutionContext context) {
        List<float[]> queries;
        if (def.source() == FeatureDef.Source.COSINE || def.source() == FeatureDef.Source.DOT) {
            float[] q = params.vector(def.param());
            queries = q == null ? null : List.of(q);
        } else {
            queries = params.vectors(def.param());
        }
        MappedFieldType ft = fieldType(def.field(), context);
        if (ft == null && context != null) {
            return () -> constant(Double.NaN);
        }
        if (ft != null) {
            // Checked through the generic field type API, which every 9.x has; dimensions and
            // element type are checked per segment from Lucene's field info.
            if ("dense_vector".equals(ft.typeName()) == false) {
                throw new IllegalArgumentException(
                    "field [" + def.field() + "] is a [" + ft.typeName() + "] field; source [" + def.source().jsonName() + "] needs a dense_vector"
                );
            }
            if (ft.isSearchable() == false) {
                throw new IllegalArgumentException(
                    "dense_vector [" + def.field() + "] is not indexed (index: false); the rescorer reads indexed vectors"
                );
            }
        }
        if (queries == null) {
            return () -> constant(Double.NaN);
        }
        int k = queries.size();
        float[][] q = queries.toArray(new float[0][]);
        for (float[] qi : q) {
            if (qi.length != q[0].length) {
                throw new IllegalArgumentException(
                    "[params." + def.param() + "] mixes vectors of " + q[0].length + " and " + qi.length + " dimensions"
                );
            }
        }
        double[] norms = new double[k];
        for (int i = 0; i < k; i++) {
            double s = 0;
            for (float x : q[i]) {
                s += (double) x * x;
            }
            norms[i] = Math.sqrt(s);
        }
        FeatureDef.Source mode = def.source();
        String field = ft == null ? def.field() : ft.name(); // an alias reads its target's vectors
        if (mode == FeatureDef.Source.DOT) {
            return () -> new Column() {
                private final VectorReader vectors = new VectorReader(def, field, q[0].length, true);

                @Override
                public void setNextReader(LeafReaderContext leaf) throws IOException {
                    vectors.setNextReader(leaf);
                }

                @Override
                public double value(int doc, float score) throws IOException {
                    float[] v = vectors.vector(doc);
                    return v == null ? Double.NaN : dot(vectors.denormalized(v, doc), q[0]);
                }
            };
        }
        boolean mean = mode == FeatureDef.Source.COSINE_MEAN;
        // cosine_max and cosine_mean of the same field and vectors share one pass over the k cosines.
        List<Object> key = List.of(field, def.param(), mode == FeatureDef.Source.COSINE ? "vector" : "vectors");
        return ColumnFactory.sharing(shared -> {
            Cosines cosines = (Cosines) shared.computeIfAbsent(key, x -> new Cosines(def, field, q, norms));
            return new Column() {
                @Override
                public void setNextReader(LeafReaderContext leaf) throws IOException {
                    cosines.setNextReader(leaf);
                }

                @Override
                public double value(int doc, float score) throws IOException {
                    return cosines.compute(doc) ? (mean ? cosines.mean : cosines.max) : Double.NaN;
                }
            };
        });
    }

    /** Reads a segment's float vectors of one field, forward, checking their encoding and dimensions against the params'. */
    private static class VectorReader {
        private final FeatureDef def;
        private final String field;
        private final int dims;
        private final boolean readMagnitudes;
        private FloatVectorValues values;
        private KnnVectorValues.DocIndexIterator iterator;
        /** Magnitudes of vectors Elasticsearch normalized at index time (similarity cosine); read by dot only. */
        private NumericDocValues magnitudes;
        private float[] scaled;

        /** @param dims the params' vectors' dimensions, which the field's must equal */
        VectorReader(FeatureDef def, String field, int dims, boolean readMagnitudes) {
            this.def = def;
            this.field = field;
            this.dims = dims;
            this.readMagnitudes = readMagnitudes;
        }

        void setNextReader(LeafReaderContext leaf) throws IOException {
            values = null;
            iterator = null;
            magnitudes = null;
            FieldInfo info = leaf.reader().getFieldInfos().fieldInfo(field);
            if (info == null || info.getVectorDimension() == 0) {
                return; // no document of this segment has a vector
            }
            if (info.getVectorEncoding() != VectorEncoding.FLOAT32) {
                throw new IllegalArgumentException(
                    "feature [" + def.name() + "]: dense_vector [" + field + "] holds " + info.getVectorEncoding()
                        + " vectors; only float vectors are read"
                );
            }
            if (info.getVectorDimension() != dims) {
                throw new IllegalArgumentException(
                    "feature [" + def.name() + "]: [params." + def.param() + "] has a vector of " + dims
                        + " dimensions; field [" + field + "] has " + info.getVectorDimension()
                );
            }
            values = leaf.reader().getFloatVectorValues(field);
            iterator = values == null ? null : values.iterator();
            if (readMagnitudes) {
                // A dense_vector with similarity cosine stores v / |v| and keeps |v| (float32) in
                // these doc values; a vector already of unit length (within 1e-3) is kept as given
                // and has none. Cosines do not care; a dot product needs the vector back.
                magnitudes = leaf.reader().getNumericDocValues(field + MAGNITUDE_SUFFIX);
            }
        }

        /** The doc's vector as stored, or null when it has none. */
        final float[] vector(int doc) throws IOException {
            if (iterator == null) {
                return null;
            }
            int current = iterator.docID();
            if (current < doc) {
                current = iterator.advance(doc);
            }
            return current == doc ? values.vectorValue(iterator.index()) : null;
        }

        /** The vector as indexed: Elasticsearch's own reading of a normalized one (each component times the magnitude, in float32). */
        final float[] denormalized(float[] v, int doc) throws IOException {
            if (magnitudes == null || magnitudes.advanceExact(doc) == false) {
                return v;
            }
            float magnitude = Float.intBitsToFloat((int) magnitudes.longValue());
            if (scaled == null) {
                scaled = new float[v.length];
            }
            for (int i = 0; i < v.length; i++) {
                scaled[i] = v[i] * magnitude;
            }
            return scaled;
        }
    }

    /**
     * The max and the mean of a doc's cosines with the k vectors of a param (k = 1 for {@code cosine}),
     * computed once per doc for every column that reads them. A doc without a vector, a zero vector or a
     * zero param vector has neither.
     */
    private static final class Cosines extends VectorReader {
        private final Dots products;
        private final double[] norms;
        private final double[] dots;
        private LeafReaderContext leaf;
        private int doc = -1;
        private boolean present;
        double max;
        double mean;

        Cosines(FeatureDef def, String field, float[][] q, double[] norms) {
            super(def, field, q[0].length, false);
            this.products = Dots.of(q);
            this.norms = norms;
            this.dots = new double[q.length];
        }

        @Override
        void setNextReader(LeafReaderContext next) throws IOException {
            if (next != leaf) { // each sharing column passes the segment on: read it once
                leaf = next;
                doc = -1;
                super.setNextReader(next);
            }
        }

        /** Computes the doc's cosines (once per doc); false when it has none. */
        boolean compute(int target) throws IOException {
            if (target == doc) {
                return present;
            }
            doc = target;
            present = false;
            float[] v = vector(target);
            if (v == null) {
                return false;
            }
            double docNorm2 = 0;
            for (float x : v) {
                docNorm2 += (double) x * x;
            }
            if (docNorm2 == 0) {
                return false;
            }
            double docNorm = Math.sqrt(docNorm2);
            products.compute(v, dots);
            int k = products.k;
            double best = Double.NEGATIVE_INFINITY;
            double sum = 0;
            for (int i = 0; i < k; i++) {
                if (norms[i] == 0) {
                    return false;
                }
                double cos = dots[i] / (docNorm * norms[i]);
                best = Math.max(best, cos);
                sum += cos;
            }
            max = best;
            mean = sum / k;
            present = true;
            return true;
        }
    }

    /**
     * The dot product in double over the float32 components (a doc's one dot with a param vector;
     * {@link Dots} computes a doc's dots with k vectors together), in four interleaved partial sums
     * (so the CPU overlaps the additions; a sequential sum waits on each: 3.1 against 3.6 ms for 20 ×
     * 450 dots of 384 dimensions in a plain warmed-up loop here). The order of the sum differs from
     * numpy's as a sequential one would: by a few units in the last place of a double, far below the
     * float32 the feature is stored in.
     */
    static double dot(float[] a, float[] b) {
        int n = b.length;
        double s0 = 0;
        double s1 = 0;
        double s2 = 0;
        double s3 = 0;
        int i = 0;
        for (; i + 3 < n; i += 4) {
            s0 += (double) a[i] * b[i];
            s1 += (double) a[i + 1] * b[i + 1];
            s2 += (double) a[i + 2] * b[i + 2];
            s3 += (double) a[i + 3] * b[i + 3];
        }
        for (; i < n; i++) {
            s0 += (double) a[i] * b[i];
        }
        return (s0 + s1) + (s2 + s3);
    }

    private static ColumnFactory overlapFactory(FeatureDef def, QueryParams params, SearchExecutionContext context) {
        QueryParams.Overlap overlap = params.overlap(def.param());
        MappedFieldType ft = fieldType(def.field(), context);
        if (ft == null) {
            return () -> constant(Double.NaN);
        }
        IndexFieldData<?> fd = fieldData(def.field(), ft, context);
        if (!(fd instanceof IndexOrdinalsFieldData ordinals)) {
            throw new IllegalArgumentException(
                "field [" + def.field() + "] is a [" + ft.typeName() + "] field; source [overlap] needs a keyword field"
            );
        }
        if (overlap == null || overlap.total() <= 0) {
            return () -> constant(Double.NaN);
        }
        return () -> new Column() {
            private SortedSetDocValues values;
            private Map<Long, int[]> setsOfOrd;
            private final boolean[] hit = new boolean[overlap.weights().length];
            private final int[] touched = new int[overlap.weights().length];

            @Override
            public void setNextReader(LeafReaderContext leaf) throws IOException {
                // The request's values looked up once per segment: ordinal -> the sets that hold it.
                SortedSetDocValues lookup = ordinals.load(leaf).getOrdinalsValues();
                Map<Long, List<Integer>> building = new HashMap<>();
                List<BytesRef[]> sets = overlap.sets();
                for (int i = 0; i < sets.size(); i++) {
                    for (BytesRef value : sets.get(i)) {
                        long ord = lookup.lookupTerm(value);
                        if (ord >= 0) {
                            List<Integer> owners = building.computeIfAbsent(ord, o -> new ArrayList<>(2));
                            if (owners.isEmpty() || owners.get(owners.size() - 1) != i) {
                                owners.add(i);
                            }
                        }
                    }
                }
                setsOfOrd = new HashMap<>(building.size() * 2);
                for (Map.Entry<Long, List<Integer>> e : building.entrySet()) {
                    setsOfOrd.put(e.getKey(), e.getValue().stream().mapToInt(Integer::intValue).toArray());
                }
                values = ordinals.load(leaf).getOrdinalsValues();
            }

            @Override
            public double value(int doc, float score) throws IOException {
                // A document without a value of the facet reads as missing, as in vecrank's Python features.
                if (values == null || values.advanceExact(doc) == false) {
                    return Double.NaN;
                }
                int count = values.docValueCount();
                int nTouched = 0;
                double shared = 0;
                for (int j = 0; j < count; j++) {
                    int[] owners = setsOfOrd.get(values.nextOrd());
                    if (owners == null) {
                        continue;
                    }
                    for (int s : owners) {
                        if (hit[s] == false) {
                            hit[s] = true;
                            touched[nTouched++] = s;
                            shared += overlap.weights()[s];
                        }
                    }
                }
                for (int j = 0; j < nTouched; j++) {
                    hit[touched[j]] = false;
                }
                return shared / overlap.total();
            }
        };
    }

    /**
     * {@code param_map}: the request's value for the document's key, the first (smallest) value of the
     * keyword doc values of {@code key_field}. A key the values lack reads {@code default}; a document
     * without a key, an absent param and an unmapped key field read NaN.
     */
    private static ColumnFactory paramMapFactory(FeatureDef def, QueryParams params, SearchExecutionContext context) {
        QueryParams.ParamMap map = params.paramMap(def.param());
        String field = keywordField(def.keyField(), "key_field [" + def.keyField() + "]", "source [param_map] needs a keyword field", context);
        if (field == null || map == null) {
            return () -> constant(Double.NaN);
        }
        return ColumnFactory.sharing(shared -> {
            KeywordKeys keys = KeywordKeys.shared(shared, field, "feature [" + def.name() + "]: key_field [" + field + "]",
                "source [param_map] needs a keyword field");
            return new Column() {
                @Override
                public void setNextReader(LeafReaderContext leaf) throws IOException {
                    keys.setNextReader(leaf);
                }

                @Override
                public double value(int doc, float score) throws IOException {
                    String key = keys.keyText(doc);
                    return key == null ? Double.NaN : map.get(key);
                }
            };
        });
    }

    /**
     * The Lucene field of a keyword field the plan reads keys from, checked against the shard's mapping:
     * null when the index does not map it (every key is then missing), an error for another type or a
     * keyword without doc values. Without a context (tests) the name is taken as it is.
     */
    private static String keywordField(String field, String what, String need, SearchExecutionContext context) {
        if (context == null) {
            return field;
        }
        MappedFieldType ft = fieldType(field, context);
        if (ft == null) {
            return null;
        }
        if ("keyword".equals(ft.typeName()) == false) {
            throw new IllegalArgumentException(what + " is a [" + ft.typeName() + "] field; " + need);
        }
        if (ft.hasDocValues() == false) {
            throw new IllegalArgumentException(what + " has no doc values to read (doc_values: false)");
        }
        return ft.name(); // an alias reads its target's doc values
    }

    /**
     * The first (smallest) value of a keyword field's doc values per document ({@link SortedSetDocValues},
     * or {@link SortedDocValues}), read forward one segment at a time. The returned bytes are only valid
     * until the next call.
     */
    static final class KeywordKeys {
        private final String field;
        private final String what;
        private final String need;
        private SortedSetDocValues keys;
        private LeafReaderContext leaf;
        private int doc = -1;
        private BytesRef key;
        private String text;

        /** {@code what} and {@code need} start and end the error for a segment whose doc values are not a keyword's. */
        KeywordKeys(String field, String what, String need) {
            this.field = field;
            this.what = what;
            this.need = need;
        }

        /**
         * The reader of {@code field}'s keys for every column of one extractor that reads them (the
         * score maps' lookups and the tie key: one term lookup per doc instead of one per reader).
         * The first to ask names the field in the error for a segment whose doc values are not a keyword's.
         */
        static KeywordKeys shared(Map<Object, Object> shared, String field, String what, String need) {
            return (KeywordKeys) shared.computeIfAbsent(List.of("keys", field), x -> new KeywordKeys(field, what, need));
        }

        void setNextReader(LeafReaderContext next) throws IOException {
            if (next == leaf) {
                return; // each sharing reader passes the segment on: open it once
            }
            leaf = next;
            doc = -1;
            keys = null;
            FieldInfo info = next.reader().getFieldInfos().fieldInfo(field);
            if (info == null || info.getDocValuesType() == DocValuesType.NONE) {
                return; // no document of this segment has a key
            }
            if (info.getDocValuesType() == DocValuesType.SORTED_SET) {
                keys = next.reader().getSortedSetDocValues(field);
            } else if (info.getDocValuesType() == DocValuesType.SORTED) {
                keys = DocValues.singleton(next.reader().getSortedDocValues(field));
            } else {
                throw new IllegalArgumentException(what + " holds " + info.getDocValuesType() + " doc values; " + need);
            }
        }

        /** The doc's key (looked up once per doc: docs come in increasing order), null when it has none. */
        BytesRef key(int target) throws IOException {
            if (target != doc) {
                doc = target;
                key = keys == null || keys.advanceExact(target) == false ? null : keys.lookupOrd(keys.nextOrd());
                text = null;
            }
            return key;
        }

        /** {@link #key}'s text (decoded once per doc, for the columns that look it up in a param map), null when it has none. */
        String keyText(int target) throws IOException {
            BytesRef k = key(target);
            if (k != null && text == null) {
                text = k.utf8ToString();
            }
            return k == null ? null : text;
        }
    }
}
