package org.vecrank.elasticsearch;

import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.RestHandler;

import java.util.Collection;
import java.util.List;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * Registers the plugin's REST endpoint through {@code getRestHandlers(RestHandlersServices, ...)},
 * the signature of Elasticsearch 9.5 and later. (The build picks this source folder or
 * {@code es-legacy/} from {@code es.version}; only the signature differs.)
 */
abstract class RestPluginBase extends Plugin implements ActionPlugin {

    @Override
    public Collection<RestHandler> getRestHandlers(
        RestHandlersServices services,
        Supplier<DiscoveryNodes> nodesInCluster,
        Predicate<NodeFeature> clusterSupportsFeature
    ) {
        return List.of(new RestValidateModelAction());
    }
}
