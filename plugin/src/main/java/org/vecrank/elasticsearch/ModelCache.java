package org.vecrank.elasticsearch;

import java.util.LinkedHashMap;
import java.util.Map;

/** Parsed models of this node, least recently used evicted first. One per plugin instance. */
final class ModelCache {

    static final int DEFAULT_CAPACITY = 32;

    private final Map<ModelKey, RankModel> models;

    ModelCache() {
        this(DEFAULT_CAPACITY);
    }

    ModelCache(int capacity) {
        this.models = new LinkedHashMap<>(16, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<ModelKey, RankModel> eldest) {
                return size() > capacity;
            }
        };
    }

    synchronized RankModel get(ModelKey key) {
        return models.get(key);
    }

    synchronized void put(ModelKey key, RankModel model) {
        models.put(key, model);
    }

    synchronized int size() {
        return models.size();
    }
}
