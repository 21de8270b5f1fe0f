package org.vecrank.elasticsearch;

import org.elasticsearch.common.io.stream.StreamInput;
import org.elasticsearch.common.io.stream.StreamOutput;
import org.elasticsearch.common.io.stream.Writeable;

import java.io.IOException;

/**
 * Which stored document a model was parsed from: the concrete index (name and UUID), the document
 * id ({@code <model_id>@<version>}) and its sequence number and primary term. A re-created index or
 * a re-written document gets a new key, so a cached model is never stale.
 */
record ModelKey(String index, String indexUuid, String docId, long seqNo, long primaryTerm) implements Writeable {

    ModelKey(StreamInput in) throws IOException {
        this(in.readString(), in.readString(), in.readString(), in.readZLong(), in.readVLong());
    }

    @Override
    public void writeTo(StreamOutput out) throws IOException {
        out.writeString(index);
        out.writeString(indexUuid);
        out.writeString(docId);
        out.writeZLong(seqNo);
        out.writeVLong(primaryTerm);
    }
}
