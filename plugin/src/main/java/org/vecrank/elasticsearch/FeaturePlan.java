package org.vecrank.elasticsearch;

import org.apache.lucene.index.DocValues;
import org.apache.lucene.index.DocValuesType;
import org.apache.lucene.index.FieldInfo;
import org.apache.lucene.index.FloatVectorValues;
import org.apache.lucene.index.KnnVectorValues;
import org.apache.lucene.index.LeafReaderContext;
import org.apache.lucene.index.SortedSetDocValues;
import org.apache.lucene.index.VectorEncoding;
import org.apache.lucene.util.BytesRef;
import org.elasticsearch.index.fielddata.IndexFieldData;
import org.elasticsearch.index.fielddata.IndexNumericFieldData;
import org.elasticsearch.index.fielddata.IndexOrdinalsFieldData;
import org.elasticsearch.index.fielddata.SortedNumericDoubleValues;
import org.elasticsearch.index.mapper.MappedFieldType;
import org.elasticsearch.index.query.SearchExecutionContext;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * How one shard computes a model's features: the fields resolved against the shard's mapping and
 * the request's params read once. {@link #open()} gives an {@link Extractor} that walks segments.
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
    }

    private final List<ColumnFactory> factories;

    FeaturePlan(RankModel model, Map<String, Object> rawParams, SearchExecutionContext context) {
        QueryParams params = new QueryParams(rawParams);
        long nowMs = params.nowMs(context == null ? System.currentTimeMillis() : context.nowInMillis());
        List<ColumnFactory> out = new ArrayList<>(model.features().size());
        for (FeatureDef def : model.features()) {
            try {
                out.add(factory(def, params, context, nowMs));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("feature [" + def.name() + "] of model " + model.describe() + ": " + e.getMessage(), e);
            }
        }
        this.factories = out;
    }

    int size() {
        return factories.size();
    }

    Extractor open() {
        Column[] columns = new Column[factories.size()];
        for (int i = 0; i < columns.length; i++) {
            columns[i] = factories.get(i).open();
        }
        return new Extractor(columns);
    }

    /** Fills rows of feature values, one segment at a time (documents in increasing order within one). */
    static final class Extractor {
        private final Column[] columns;

        Extractor(Column[] columns) {
            this.columns = columns;
        }

        void setNextReader(LeafReaderContext leaf) throws IOException {
            for (Column c : columns) {
                c.setNextReader(leaf);
            }
        }

        void extract(int doc, float score, float[] out, int offset) throws IOException {
            for (int i = 0; i < columns.length; i++) {
                out[offset + i] = (float) columns[i].value(doc, score);
            }
        }
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
                        return score;
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
                return cosineFactory(def, params, context);
            case OVERLAP:
                return overlapFactory(def, params, context);
            case PARAM_MAP:
                return paramMapFactory(def, params, context);
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

    private static ColumnFactory cosineFactory(FeatureDef def, QueryParams params, SearchExecutionContext context) {
        List<float[]> queries;
        if (def.source() == FeatureDef.Source.COSINE) {
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
        String field = def.field();
        return () -> new Column() {
            private FloatVectorValues values;
            private KnnVectorValues.DocIndexIterator iterator;

            @Override
            public void setNextReader(LeafReaderContext leaf) throws IOException {
                values = null;
                iterator = null;
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
                if (info.getVectorDimension() != q[0].length) {
                    throw new IllegalArgumentException(
                        "feature [" + def.name() + "]: [params." + def.param() + "] has a vector of " + q[0].length
                            + " dimensions; field [" + field + "] has " + info.getVectorDimension()
                    );
                }
                values = leaf.reader().getFloatVectorValues(field);
                iterator = values == null ? null : values.iterator();
            }

            @Override
            public double value(int doc, float score) throws IOException {
                if (iterator == null) {
                    return Double.NaN;
                }
                int current = iterator.docID();
                if (current < doc) {
                    current = iterator.advance(doc);
                }
                if (current != doc) {
                    return Double.NaN;
                }
                float[] v = values.vectorValue(iterator.index());
                double docNorm2 = 0;
                for (float x : v) {
                    docNorm2 += (double) x * x;
                }
                if (docNorm2 == 0) {
                    return Double.NaN;
                }
                double docNorm = Math.sqrt(docNorm2);
                double max = Double.NEGATIVE_INFINITY;
                double sum = 0;
                for (int i = 0; i < k; i++) {
                    if (norms[i] == 0) {
                        return Double.NaN;
                    }
                    float[] qi = q[i];
                    double dot = 0;
                    for (int d = 0; d < qi.length; d++) {
                        dot += (double) v[d] * qi[d];
                    }
                    double cos = dot / (docNorm * norms[i]);
                    max = Math.max(max, cos);
                    sum += cos;
                }
                return mode == FeatureDef.Source.COSINE_MEAN ? sum / k : max;
            }
        };
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
        String field = def.keyField();
        if (context != null) {
            MappedFieldType ft = fieldType(field, context);
            if (ft == null) {
                return () -> constant(Double.NaN);
            }
            if ("keyword".equals(ft.typeName()) == false) {
                throw new IllegalArgumentException(
                    "key_field [" + field + "] is a [" + ft.typeName() + "] field; source [param_map] needs a keyword field"
                );
            }
            if (ft.hasDocValues() == false) {
                throw new IllegalArgumentException("key_field [" + field + "] has no doc values to read (doc_values: false)");
            }
            field = ft.name(); // an alias reads its target's doc values
        }
        if (map == null) {
            return () -> constant(Double.NaN);
        }
        String luceneField = field;
        return () -> new Column() {
            private SortedSetDocValues keys;

            @Override
            public void setNextReader(LeafReaderContext leaf) throws IOException {
                keys = null;
                FieldInfo info = leaf.reader().getFieldInfos().fieldInfo(luceneField);
                if (info == null || info.getDocValuesType() == DocValuesType.NONE) {
                    return; // no document of this segment has a key
                }
                if (info.getDocValuesType() == DocValuesType.SORTED_SET) {
                    keys = leaf.reader().getSortedSetDocValues(luceneField);
                } else if (info.getDocValuesType() == DocValuesType.SORTED) {
                    keys = DocValues.singleton(leaf.reader().getSortedDocValues(luceneField));
                } else {
                    throw new IllegalArgumentException(
                        "feature [" + def.name() + "]: key_field [" + luceneField + "] holds " + info.getDocValuesType()
                            + " doc values; source [param_map] needs a keyword field"
                    );
                }
            }

            @Override
            public double value(int doc, float score) throws IOException {
                if (keys == null || keys.advanceExact(doc) == false) {
                    return Double.NaN;
                }
                return map.get(keys.lookupOrd(keys.nextOrd()));
            }
        };
    }
}
