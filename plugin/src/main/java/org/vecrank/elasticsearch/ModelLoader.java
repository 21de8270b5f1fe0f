package org.vecrank.elasticsearch;

import org.elasticsearch.ExceptionsHelper;
import org.elasticsearch.ResourceNotFoundException;
import org.elasticsearch.action.ActionListener;
import org.elasticsearch.action.get.GetRequest;
import org.elasticsearch.action.search.SearchRequest;
import org.elasticsearch.client.internal.Client;
import org.elasticsearch.common.document.DocumentField;
import org.elasticsearch.index.IndexNotFoundException;
import org.elasticsearch.index.query.BoolQueryBuilder;
import org.elasticsearch.index.query.QueryBuilders;
import org.elasticsearch.search.SearchHit;
import org.elasticsearch.search.builder.SearchSourceBuilder;
import org.elasticsearch.search.sort.SortBuilders;
import org.elasticsearch.search.sort.SortOrder;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Finds a model's document in the registry index and parses it, through the node's client (so as
 * the user who searches: reading the models index needs their read privilege).
 *
 * <p>Every request costs one small search (model id plus version, or plus {@code status: active});
 * the booster is fetched and parsed only when the cache lacks that exact document.
 */
final class ModelLoader {

    record Loaded(ModelKey key, RankModel model) {}

    private ModelLoader() {}

    /** Resolve {@code modelId} (at {@code version}, or its active version) in {@code modelsIndex} and load it. */
    static void resolve(Client client, ModelCache cache, String modelsIndex, String modelId, Integer version,
                        ActionListener<Loaded> listener) {
        BoolQueryBuilder query = QueryBuilders.boolQuery().filter(QueryBuilders.termQuery("model_id", modelId));
        query.filter(version != null ? QueryBuilders.termQuery("version", version) : QueryBuilders.termQuery("status", "active"));
        SearchSourceBuilder source = new SearchSourceBuilder().query(query)
            .size(1)
            .sort(SortBuilders.fieldSort("version").order(SortOrder.DESC).unmappedType("integer"))
            // The document's version from doc values: its _source holds the booster (hundreds of KB),
            // which a source filter would decompress and parse on every request.
            .fetchSource(false)
            .docValueField("version")
            .seqNoAndPrimaryTerm(true)
            .trackTotalHits(false);
        client.search(new SearchRequest(modelsIndex).source(source), ActionListener.wrap(response -> {
            SearchHit[] hits = response.getHits().getHits();
            if (hits.length == 0) {
                notFound(client, modelsIndex, modelId, version, listener);
                return;
            }
            SearchHit hit = hits[0];
            // The index UUID tells a re-created index from the old one of the same name.
            String uuid = hit.getShard() == null ? "" : hit.getShard().getShardId().getIndex().getUUID();
            ModelKey key = new ModelKey(hit.getIndex(), uuid, hit.getId(), hit.getSeqNo(), hit.getPrimaryTerm());
            DocumentField field = hit.field("version");
            Object found = field == null ? null : field.getValue();
            Integer expected = found instanceof Number n ? n.intValue() : version;
            load(client, cache, key, modelId, expected, listener);
        }, e -> listener.onFailure(translate(e, modelsIndex, modelId))));
    }

    /** Load the document {@code key} names, from the cache or the index (on a data node, after the coordinator resolved it). */
    static void load(Client client, ModelCache cache, ModelKey key, String modelId, Integer version, ActionListener<Loaded> listener) {
        RankModel cached = cache.get(key);
        if (cached != null) {
            listener.onResponse(new Loaded(key, cached));
            return;
        }
        client.get(new GetRequest(key.index(), key.docId()), ActionListener.wrap(response -> {
            if (response.isExists() == false) {
                listener.onFailure(new ResourceNotFoundException(
                    "model [{}] document [{}] disappeared from index [{}] during the search", modelId, key.docId(), key.index()));
                return;
            }
            Map<String, Object> source = response.getSourceAsMap();
            ModelKey actual = new ModelKey(key.index(), key.indexUuid(), key.docId(), response.getSeqNo(), response.getPrimaryTerm());
            // Parsing a large booster is CPU work: off the transport thread.
            client.threadPool().generic().execute(() -> {
                try {
                    RankModel model = RankModel.fromSource(source);
                    if (model.modelId().equals(modelId) == false || (version != null && model.version() != version)) {
                        throw new IllegalArgumentException(
                            "document [" + key.docId() + "] in [" + key.index() + "] holds model [" + model.modelId() + "] version ["
                                + model.version() + "], not model [" + modelId + "]" + (version == null ? "" : " version [" + version + "]")
                        );
                    }
                    cache.put(actual, model);
                    if (actual.equals(key) == false) {
                        cache.put(key, model);
                    }
                    listener.onResponse(new Loaded(actual, model));
                } catch (Exception e) {
                    listener.onFailure(e);
                }
            });
        }, e -> listener.onFailure(translate(e, key.index(), modelId))));
    }

    private static void notFound(Client client, String modelsIndex, String modelId, Integer version, ActionListener<Loaded> listener) {
        SearchSourceBuilder source = new SearchSourceBuilder().query(QueryBuilders.termQuery("model_id", modelId))
            .size(50)
            .sort(SortBuilders.fieldSort("version").order(SortOrder.ASC).unmappedType("integer"))
            .fetchSource(new String[] { "version", "status" }, null)
            .trackTotalHits(false);
        String what = version != null ? "version [" + version + "]" : "active version";
        client.search(new SearchRequest(modelsIndex).source(source), ActionListener.wrap(response -> {
            List<String> known = new ArrayList<>();
            for (SearchHit hit : response.getHits().getHits()) {
                Map<String, Object> s = hit.getSourceAsMap();
                known.add("v" + s.get("version") + " (" + s.get("status") + ")");
            }
            String message = known.isEmpty()
                ? "model [" + modelId + "] is not registered in [" + modelsIndex + "]"
                : "model [" + modelId + "] has no " + what + " in [" + modelsIndex + "]; its versions: " + String.join(", ", known);
            listener.onFailure(new ResourceNotFoundException(message));
        }, e -> listener.onFailure(translate(e, modelsIndex, modelId))));
    }

    private static Exception translate(Exception e, String index, String modelId) {
        Throwable cause = ExceptionsHelper.unwrapCause(e);
        if (cause instanceof IndexNotFoundException) {
            return new ResourceNotFoundException("model [{}]: the models index [{}] does not exist", e, modelId, index);
        }
        return e;
    }
}
