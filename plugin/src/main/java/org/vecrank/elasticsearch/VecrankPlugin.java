package org.vecrank.elasticsearch;

import org.elasticsearch.plugins.SearchPlugin;

import java.util.List;

/**
 * The vecrank plugin: the {@code vecrank} rescorer, and {@code POST /_vecrank/model/_validate}
 * (registered by {@link RestPluginBase}, whose source depends on the Elasticsearch version).
 */
public class VecrankPlugin extends RestPluginBase implements SearchPlugin {

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
}
