package org.vecrank.elasticsearch;

import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.SearchPlugin;
import org.elasticsearch.rest.RestHandler;

import java.util.Collection;
import java.util.List;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * The vecrank plugin: the {@code vecrank} rescorer and {@code POST /_vecrank/model/_validate}.
 */
public class VecrankPlugin extends Plugin implements SearchPlugin, ActionPlugin {

    private final ModelCache cache = new ModelCache();

    @Override
    public List<RescorerSpec<?>> getRescorers() {
        return List.of(
            new RescorerSpec<>(
                VecrankRescorerBuilder.NAME,
                in -> new VecrankRescorerBuilder(in, cache),
                parser -> VecrankRescorerBuilder.fromXContent(parser, cache)
            )
        );
    }

    @Override
    public Collection<RestHandler> getRestHandlers(
        RestHandlersServices services,
        Supplier<org.elasticsearch.cluster.node.DiscoveryNodes> nodesInCluster,
        Predicate<org.elasticsearch.features.NodeFeature> clusterSupportsFeature
    ) {
        return List.of(new RestValidateModelAction());
    }
}
