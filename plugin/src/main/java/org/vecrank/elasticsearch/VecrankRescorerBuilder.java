package org.vecrank.elasticsearch;

import org.apache.lucene.util.SetOnce;
import org.elasticsearch.TransportVersion;
import org.elasticsearch.common.io.stream.StreamInput;
import org.elasticsearch.common.io.stream.StreamOutput;
import org.elasticsearch.index.query.QueryRewriteContext;
import org.elasticsearch.index.query.SearchExecutionContext;
import org.elasticsearch.search.rescore.RescoreContext;
import org.elasticsearch.search.rescore.RescorerBuilder;
import org.elasticsearch.xcontent.ConstructingObjectParser;
import org.elasticsearch.xcontent.ObjectParser;
import org.elasticsearch.xcontent.ParseField;
import org.elasticsearch.xcontent.XContentBuilder;
import org.elasticsearch.xcontent.XContentParser;

import java.io.IOException;
import java.util.Map;
import java.util.Objects;

import static org.elasticsearch.xcontent.ConstructingObjectParser.constructorArg;
import static org.elasticsearch.xcontent.ConstructingObjectParser.optionalConstructorArg;

/**
 * {@code "rescore": {"window_size": 500, "vecrank": {"model": "default", "version": 3,
 * "models_index": "vecrank-models", "keep": 10, "params": {...}}}}.
 *
 * <p>{@code keep} (optional): how many of the best hits the rescore returns; the hits below them
 * are dropped. Elasticsearch fetches every hit a shard's rescore returns, the whole window even
 * when the search's {@code size} is smaller, so a search that shows 10 of 450 rescored hits
 * sends its size here and loads 10 documents instead of 450.
 *
 * <p>Without {@code version} the model's active version is used. The model is found during the
 * coordinating node's rewrite (one small search of the models index, the booster fetched and parsed
 * only when this node has not cached that document yet); data nodes receive the resolved document
 * and load it from their own cache or with one get.
 */
public class VecrankRescorerBuilder extends RescorerBuilder<VecrankRescorerBuilder> {

    public static final String NAME = "vecrank";
    public static final String DEFAULT_MODELS_INDEX = "vecrank-models";

    static final ParseField MODEL = new ParseField("model");
    static final ParseField VERSION = new ParseField("version");
    static final ParseField MODELS_INDEX = new ParseField("models_index");
    static final ParseField PARAMS = new ParseField("params");
    static final ParseField KEEP = new ParseField("keep");

    private static final ConstructingObjectParser<VecrankRescorerBuilder, ModelCache> PARSER = new ConstructingObjectParser<>(
        NAME,
        false,
        (args, cache) -> new VecrankRescorerBuilder(
            (String) args[0],
            (Integer) args[1],
            (String) args[2],
            castParams(args[3]),
            cache
        ).keep((Integer) args[4])
    );

    static {
        PARSER.declareString(constructorArg(), MODEL);
        PARSER.declareInt(optionalConstructorArg(), VERSION);
        PARSER.declareString(optionalConstructorArg(), MODELS_INDEX);
        PARSER.declareField(optionalConstructorArg(), (p, c) -> p.map(), PARAMS, ObjectParser.ValueType.OBJECT);
        PARSER.declareInt(optionalConstructorArg(), KEEP);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> castParams(Object params) {
        return (Map<String, Object>) params;
    }

    public static VecrankRescorerBuilder fromXContent(XContentParser parser, ModelCache cache) {
        return PARSER.apply(parser, cache);
    }

    private final String modelId;
    private final Integer version;
    private final String modelsIndex;
    private final Map<String, Object> params;
    private final ModelCache cache;
    /** The registry document the coordinator chose; null until then. */
    private final ModelKey resolved;
    /** The parsed model; null until this node has loaded it. Never serialized. */
    private final RankModel model;
    /** How many of the best hits the rescore returns; null: all of them. */
    private Integer keep;

    public VecrankRescorerBuilder(String modelId, Integer version, String modelsIndex, Map<String, Object> params, ModelCache cache) {
        this(modelId, version, modelsIndex, params, cache, null, null);
    }

    private VecrankRescorerBuilder(String modelId, Integer version, String modelsIndex, Map<String, Object> params, ModelCache cache,
                                   ModelKey resolved, RankModel model) {
        if (modelId == null || modelId.isEmpty()) {
            throw new IllegalArgumentException("[" + NAME + "] requires [" + MODEL.getPreferredName() + "]");
        }
        if (version != null && version < 1) {
            throw new IllegalArgumentException("[" + NAME + "] [" + VERSION.getPreferredName() + "] must be >= 1, got " + version);
        }
        if (modelsIndex != null && modelsIndex.isEmpty()) {
            throw new IllegalArgumentException("[" + NAME + "] [" + MODELS_INDEX.getPreferredName() + "] must not be empty");
        }
        this.modelId = modelId;
        this.version = version;
        this.modelsIndex = modelsIndex == null ? DEFAULT_MODELS_INDEX : modelsIndex;
        this.params = params == null ? Map.of() : params;
        this.cache = cache == null ? new ModelCache(1) : cache;
        this.resolved = resolved;
        this.model = model;
    }

    public VecrankRescorerBuilder(StreamInput in, ModelCache cache) throws IOException {
        super(in);
        this.modelId = in.readString();
        this.version = in.readOptionalInt();
        this.modelsIndex = in.readString();
        this.params = in.readGenericMap();
        this.resolved = in.readOptionalWriteable(ModelKey::new);
        this.keep = in.readOptionalInt();
        this.cache = cache;
        this.model = null;
    }

    @Override
    protected void doWriteTo(StreamOutput out) throws IOException {
        out.writeString(modelId);
        out.writeOptionalInt(version);
        out.writeString(modelsIndex);
        out.writeGenericMap(params);
        out.writeOptionalWriteable(resolved);
        out.writeOptionalInt(keep);
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    @Override
    public TransportVersion getMinimalSupportedVersion() {
        // Every node of a cluster runs the same plugin build; the wire format is ours alone.
        return TransportVersion.minimumCompatible();
    }

    @Override
    protected void doXContent(XContentBuilder builder, Params xParams) throws IOException {
        builder.startObject(NAME);
        builder.field(MODEL.getPreferredName(), modelId);
        if (version != null) {
            builder.field(VERSION.getPreferredName(), version);
        }
        builder.field(MODELS_INDEX.getPreferredName(), modelsIndex);
        if (keep != null) {
            builder.field(KEEP.getPreferredName(), keep);
        }
        if (params.isEmpty() == false) {
            builder.field(PARAMS.getPreferredName(), params);
        }
        builder.endObject();
    }

    public String modelId() {
        return modelId;
    }

    public Integer version() {
        return version;
    }

    public String modelsIndex() {
        return modelsIndex;
    }

    public Map<String, Object> params() {
        return params;
    }

    /** How many of the best hits the rescore returns; null: all of them. */
    public Integer keep() {
        return keep;
    }

    /** Sets {@link #keep()}; null keeps every hit. */
    public VecrankRescorerBuilder keep(Integer keep) {
        if (keep != null && keep < 1) {
            throw new IllegalArgumentException("[" + NAME + "] [" + KEEP.getPreferredName() + "] must be >= 1, got " + keep);
        }
        this.keep = keep;
        return this;
    }

    ModelKey resolved() {
        return resolved;
    }

    RankModel model() {
        return model;
    }

    VecrankRescorerBuilder withModel(ModelKey key, RankModel loaded) {
        VecrankRescorerBuilder b = new VecrankRescorerBuilder(modelId, version, modelsIndex, params, cache, key, loaded);
        if (windowSize != null) {
            b.windowSize(windowSize);
        }
        return b.keep(keep);
    }

    @Override
    public RescorerBuilder<VecrankRescorerBuilder> rewrite(QueryRewriteContext ctx) throws IOException {
        if (model != null) {
            return this;
        }
        if (resolved != null) {
            RankModel cached = cache.get(resolved);
            if (cached != null) {
                return withModel(resolved, cached);
            }
        }
        if (ctx.convertToSearchExecutionContext() != null) {
            throw new IllegalStateException("[" + NAME + "] model [" + modelId + "] was not loaded before the shard phase");
        }
        SetOnce<ModelLoader.Loaded> loaded = new SetOnce<>();
        if (resolved != null) {
            ctx.registerAsyncAction((client, listener) -> ModelLoader.load(client, cache, resolved, modelId, null,
                listenerFor(loaded, listener)));
        } else {
            ctx.registerAsyncAction((client, listener) -> ModelLoader.resolve(client, cache, modelsIndex, modelId, version,
                listenerFor(loaded, listener)));
        }
        return new Loading(this, loaded);
    }

    private static org.elasticsearch.action.ActionListener<ModelLoader.Loaded> listenerFor(
        SetOnce<ModelLoader.Loaded> loaded, org.elasticsearch.action.ActionListener<?> listener) {
        return org.elasticsearch.action.ActionListener.wrap(l -> {
            loaded.set(l);
            listener.onResponse(null);
        }, listener::onFailure);
    }

    /** Stands in while the model loads; the next rewrite turns it into the loaded builder. */
    private static final class Loading extends VecrankRescorerBuilder {
        private final VecrankRescorerBuilder original;
        private final SetOnce<ModelLoader.Loaded> loaded;

        Loading(VecrankRescorerBuilder original, SetOnce<ModelLoader.Loaded> loaded) {
            super(original.modelId, original.version, original.modelsIndex, original.params, original.cache, original.resolved, null);
            this.original = original;
            this.loaded = loaded;
            if (original.windowSize != null) {
                windowSize(original.windowSize);
            }
            keep(original.keep);
        }

        @Override
        public RescorerBuilder<VecrankRescorerBuilder> rewrite(QueryRewriteContext ctx) {
            ModelLoader.Loaded l = loaded.get();
            return l == null ? this : original.withModel(l.key(), l.model());
        }

        @Override
        protected void doWriteTo(StreamOutput out) {
            throw new IllegalStateException("[" + NAME + "] model [" + original.modelId + "] is still loading");
        }
    }

    @Override
    protected RescoreContext innerBuildContext(int windowSize, SearchExecutionContext context) {
        if (model == null) {
            throw new IllegalStateException("[" + NAME + "] model [" + modelId + "] was not loaded before the shard phase");
        }
        return new VecrankRescorer.Context(windowSize, model, new FeaturePlan(model, params, context), keep);
    }

    @Override
    public boolean equals(Object obj) {
        if (this == obj) {
            return true;
        }
        if (super.equals(obj) == false) {
            return false;
        }
        VecrankRescorerBuilder other = (VecrankRescorerBuilder) obj;
        return modelId.equals(other.modelId)
            && Objects.equals(version, other.version)
            && modelsIndex.equals(other.modelsIndex)
            && params.equals(other.params)
            && Objects.equals(resolved, other.resolved)
            && Objects.equals(keep, other.keep);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), modelId, version, modelsIndex, params, resolved, keep);
    }
}
