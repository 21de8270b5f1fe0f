package org.vecrank.elasticsearch;

import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.XContentBuilder;
import org.elasticsearch.xcontent.XContentParser;

import java.io.IOException;
import java.util.List;
import java.util.Map;

/**
 * {@code POST /_vecrank/model/_validate} with a model document as the body: {@code {"valid": true,
 * ...}} when the plugin could serve it, else a 400 whose reason says what is wrong. The Python
 * registry calls it before storing a model.
 */
public class RestValidateModelAction extends BaseRestHandler {

    @Override
    public String getName() {
        return "vecrank_validate_model";
    }

    @Override
    public List<Route> routes() {
        return List.of(new Route(RestRequest.Method.POST, "/_vecrank/model/_validate"));
    }

    @Override
    protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) throws IOException {
        if (request.hasContent() == false) {
            throw new IllegalArgumentException("the body must be a model document (model_id, version, spec, booster, plugin_features)");
        }
        Map<String, Object> doc;
        try (XContentParser parser = request.contentParser()) {
            doc = parser.map();
        }
        RankModel model = RankModel.fromSource(doc);
        return channel -> {
            XContentBuilder builder = channel.newBuilder();
            builder.startObject();
            builder.field("valid", true);
            builder.field("model_id", model.modelId());
            builder.field("version", model.version());
            builder.field("objective", model.objective());
            builder.field("features", model.features().size());
            builder.field("trees", model.booster().numTrees());
            builder.endObject();
            channel.sendResponse(new RestResponse(RestStatus.OK, builder));
        };
    }
}
