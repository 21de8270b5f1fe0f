"""Unit tests for the ingest building blocks that need no Elasticsearch.

Readers, validation, templates, hashing, dedup, the embedding cache and dead letters run on
small files written per test; the embedder tests load the real packaged all-MiniLM-L6-v2 once.
"""

from __future__ import annotations

import os

# Before anything can import huggingface_hub: the packaged model must never trigger a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402  (a dependency: the Parquet reader needs it)
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from vecrank.ingest.cache import EmbeddingCache  # noqa: E402
from vecrank.ingest.deadletter import DeadLetters  # noqa: E402
from vecrank.ingest.embed import DEFAULT_MODEL_NAME, Embedder, HashEmbedder, TextEmbedder  # noqa: E402
from vecrank.ingest.records import (  # noqa: E402
    BadRecord,
    Deduplicator,
    ItemRow,
    Record,
    content_hash,
    read_records,
    validate_item,
)
from vecrank.ingest.template import TextTemplate  # noqa: E402

TEMPLATE = TextTemplate("{title}. {genres}. {overview}")


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def split(items):
    items = list(items)
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, BadRecord)]


def record(data: dict, line: int = 1) -> Record:
    return Record("cat.jsonl", line, data)


# ---------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------


def test_jsonl_bad_lines_are_reported_with_line_numbers_and_reading_continues(tmp_path):
    path = write(
        tmp_path / "cat.jsonl",
        (
            '{"id": 1, "title": "A"}\n'
            "\n"  # 2: blank, skipped
            '{"id": 2, "title": \n'  # 3: malformed
            "[1, 2]\n"  # 4: not an object
            "   \n"  # 5: blank, skipped
            '"just a string"\n'  # 6: not an object
            '{"id": 3, "title": "C"}\r\n'  # 7: CRLF is fine
            '{"id": 4, "title": "D"}'  # 8: no final newline
        ),
    )
    good, bad = split(read_records(path))
    assert [(r.line, r.data["id"]) for r in good] == [(1, 1), (7, 3), (8, 4)]
    assert [(b.line, b.reason) for b in bad] == [
        (3, "malformed JSON"),
        (4, "not a JSON object"),
        (6, "not a JSON object"),
    ]
    assert all(b.source == str(path) for b in bad)
    assert bad[0].raw == '{"id": 2, "title": '
    assert "column" in bad[0].detail
    assert bad[1].detail == "got a JSON array" and bad[2].detail == "got a JSON string"


def test_jsonl_invalid_utf8_costs_only_that_line(tmp_path):
    path = write(
        tmp_path / "cat.ndjson",
        b'{"id": "a", "title": "caf\xc3\xa9"}\n'
        b'{"id": "b", "title": "bad \xff\xfe byte"}\n'
        b'{"id": "c", "title": "after"}\n',
    )
    good, bad = split(read_records(path))
    assert [(r.line, r.data["id"]) for r in good] == [(1, "a"), (3, "c")]
    assert good[0].data["title"] == "café"
    assert len(bad) == 1 and bad[0].line == 2 and bad[0].reason == "invalid UTF-8"
    assert "ff" in bad[0].detail and "\\xff" in bad[0].raw


def test_jsonl_bom_is_ignored_and_json_array_file_is_one_clear_error(tmp_path):
    good, bad = split(read_records(write(tmp_path / "bom.jsonl", b'\xef\xbb\xbf{"id": 1}\n')))
    assert good[0].data == {"id": 1} and not bad

    array = write(tmp_path / "array.json", '[\n  {"id": 1},\n  {"id": 2}\n]\n')
    good, bad = split(read_records(array))
    assert not good
    assert [(b.line, b.reason) for b in bad] == [(1, "JSON array, not JSON Lines")]


def test_stdin_is_read_as_jsonl(tmp_path):
    script = (
        "import json, sys\n"
        "from vecrank.ingest.records import read_records\n"
        "print(json.dumps([[type(r).__name__, r.line] for r in read_records('-')]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], input=b'{"id": 1}\nnope\n', capture_output=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == [["Record", 1], ["BadRecord", 2]]


def test_reading_streams_from_a_pipe_without_waiting_for_the_end(tmp_path):
    """A catalog larger than memory must stream: the first record arrives before the last is written."""
    fifo = tmp_path / "catalog.jsonl"
    os.mkfifo(fifo)
    first_read = threading.Event()
    held_back = []

    def produce():
        with fifo.open("wb") as pipe:
            pipe.write(b'{"id": 1}\n')
            pipe.flush()
            # Hold the rest back until the reader has record 1; a reader that slurps the file
            # would only get it after this times out.
            held_back.append(first_read.wait(timeout=10))
            pipe.write(b'{"id": 2}\n')

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    records = read_records(fifo)
    first = next(records)
    first_read.set()
    rest = list(records)
    writer.join(timeout=30)
    assert held_back == [True]
    assert (first.line, first.data) == (1, {"id": 1})
    assert [(r.line, r.data) for r in rest] == [(2, {"id": 2})]


def test_format_and_path_are_checked_before_reading(tmp_path):
    with pytest.raises(ValueError, match="format='jsonl'"):
        read_records(write(tmp_path / "cat.txt", "x"))
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_records(tmp_path / "cat.txt", format="xml")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(IsADirectoryError):
        read_records(tmp_path / "dir.jsonl")
    with pytest.raises(ValueError, match="standard input"):
        read_records("-", format="parquet")
    # An explicit format wins over the suffix.
    good, _ = split(read_records(write(tmp_path / "cat.txt", "id,title\n1,A\n"), format="csv"))
    assert good[0].data == {"id": "1", "title": "A"}


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def test_csv_crlf_and_embedded_newlines_keep_start_line_numbers(tmp_path):
    path = write(
        tmp_path / "cat.csv",
        (
            "id,title,overview\r\n"  # 1
            '1,Alien,"In space\r\nno one\r\ncan hear"\r\n'  # 2-4
            "\r\n"  # 5: blank
            "2,Heat,LA crime\r\n"  # 6
            '3,"Quote ""inside""",\r\n'  # 7: empty overview
            '4,"Multi\nline title",x\n'  # 8-9, LF inside CRLF file
            "5,Last,end"  # 10, no final newline
        ),
    )
    good, bad = split(read_records(path))
    assert not bad
    assert [(r.line, r.data["id"]) for r in good] == [(2, "1"), (6, "2"), (7, "3"), (8, "4"), (10, "5")]
    assert good[0].data["overview"] == "In space\r\nno one\r\ncan hear"
    assert good[2].data == {"id": "3", "title": 'Quote "inside"', "overview": None}
    assert good[3].data["title"] == "Multi\nline title"


def test_csv_wrong_field_counts_name_line_and_field(tmp_path):
    path = write(
        tmp_path / "cat.csv",
        (
            "id, title ,overview\n"  # header names are stripped
            "1,A,ok\n"
            "2,B\n"  # 3: too few -> names the first missing column
            "3,C,x,extra\n"  # 4: too many
            '4,"bad"quote,x\n'  # 5: malformed quoting
            "5,E,fine\n"
        ),
    )
    good, bad = split(read_records(path))
    assert [r.data["id"] for r in good] == ["1", "5"]
    assert good[0].data == {"id": "1", "title": "A", "overview": "ok"}
    assert [(b.line, b.field, b.reason) for b in bad] == [
        (3, "overview", "wrong number of fields"),
        (4, None, "wrong number of fields"),
        (5, None, "malformed CSV"),
    ]
    assert bad[0].detail == "expected 3 fields (header), got 2"
    assert bad[0].raw == "2,B"


def test_csv_invalid_utf8_row_is_reported_and_later_rows_read(tmp_path):
    path = write(tmp_path / "cat.csv", b'id,title\n1,ok\n2,"two\nbad \xff"\n3,fine\n')
    good, bad = split(read_records(path))
    assert [(r.line, r.data["id"]) for r in good] == [(2, "1"), (5, "3")]
    assert len(bad) == 1
    assert (bad[0].line, bad[0].reason) == (3, "invalid UTF-8")
    assert "physical line 4" in bad[0].detail


def test_csv_duplicate_header_stops_the_file(tmp_path):
    good, bad = split(read_records(write(tmp_path / "cat.csv", "id,title,id\n1,a,2\n")))
    assert not good
    assert [(b.line, b.field, b.reason) for b in bad] == [(1, "id", "bad CSV header")]


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


def test_parquet_round_trip_in_batches(tmp_path):
    rows = [{"id": i, "title": f"t{i}", "tags": ["a", "b"] if i % 2 else None} for i in range(2500)]
    path = tmp_path / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=700)
    good, bad = split(read_records(path))
    assert not bad
    assert len(good) == 2500
    assert [r.line for r in good[:3]] == [1, 2, 3] and good[-1].line == 2500
    assert good[1].data == {"id": 1, "title": "t1", "tags": ["a", "b"]}


def test_corrupt_parquet_is_a_bad_record_not_a_crash(tmp_path):
    good, bad = split(read_records(write(tmp_path / "cat.parquet", b"PAR1 not really PAR1")))
    assert not good
    assert [(b.line, b.reason) for b in bad] == [(0, "unreadable Parquet")]


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    # A None entry makes the import fail as if pyarrow were not installed.
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        read_records(write(tmp_path / "cat.parquet", b"PAR1"))


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"title": "Alien", "genres": ["Horror", "Sci-Fi"], "overview": "Crew meets thing."},
            "Alien. Horror, Sci-Fi. Crew meets thing.",
        ),
        ({"title": "Title", "genres": None, "overview": ""}, "Title."),
        ({"title": "Title"}, "Title."),
        ({"title": "Heat", "overview": "LA."}, "Heat. LA."),
        ({"genres": ["Drama", None, " "], "overview": "Only this."}, "Drama. Only this."),
        ({"title": "  spaced  ", "genres": [], "overview": None}, "spaced."),
        ({"title": "Why?"}, "Why?"),
        ({"title": 1984, "genres": [1, 2.5]}, "1984. 1, 2.5."),
        ({"title": float("nan")}, ""),
        ({}, ""),
    ],
)
def test_template_rendering_drops_separators_of_empty_fields(data, expected):
    assert TEMPLATE.render(data) == expected


def test_template_labels_brackets_and_nested_fields():
    labelled = TextTemplate("Title: {title}\nGenres: {genres}\nOverview: {overview}")
    assert labelled.render({"title": "T", "overview": "O"}) == "Title: T\nOverview: O"
    assert labelled.render({"genres": "G"}) == "Genres: G"
    year = TextTemplate("{title} ({year}): {overview}")
    assert year.render({"title": "Heat", "year": 1995, "overview": "LA."}) == "Heat (1995): LA."
    assert year.render({"title": "Heat", "overview": "LA."}) == "Heat: LA."
    nested = TextTemplate("{brand.name} {title} {{literal}}")
    assert nested.fields == ("brand.name", "title")
    assert nested.render({"brand": {"name": "Acme"}, "title": "Anvil"}) == "Acme Anvil {literal}"
    assert nested.render({"brand.name": "Flat", "title": "x"}) == "Flat x {literal}"


def test_template_fields_and_round_trip():
    t = TextTemplate("{title} {overview} {title}")
    assert t.fields == ("title", "overview")
    assert TextTemplate.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert t != TextTemplate("{title}")
    assert t.to_dict() == {"pattern": "{title} {overview} {title}"}
    with pytest.raises(ValueError, match="pattern"):
        TextTemplate.from_dict({})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{title", "expected '}'"),
        ("title}", "Single '}'"),
        ("{}", "positional field"),
        ("{0}", "positional field"),
        ("{title!r}", "conversion '!r' in field 'title'"),
        ("{price:.2f}", "format spec ':.2f' in field 'price'"),
        ("{tags[0]}", "indexing in field"),
        ("no fields here", "references no field"),
    ],
)
def test_invalid_templates_name_the_problem(pattern, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        TextTemplate(pattern)


# ---------------------------------------------------------------------------------------------
# Validation, hashing, dedup
# ---------------------------------------------------------------------------------------------


def test_valid_item_normalises_id_and_keeps_other_fields():
    row = validate_item(
        record({"id": 42, "title": "Alien", "year": 1979, "vec": [0.6, 0.8]}, 7),
        id_field="id",
        template=TextTemplate("{title} ({year})"),
        vector_field="vec",
        dims=2,
    )
    assert isinstance(row, ItemRow)
    assert (row.id, row.text, row.deleted, row.line) == ("42", "Alien (1979)", False, 7)
    assert row.fields == {"title": "Alien", "year": 1979}
    assert row.vector.dtype == np.float32 and row.vector.tolist() == pytest.approx([0.6, 0.8])
    assert len(row.content_hash) == 64
    # Float ids from dataframe exports and padded string ids come out as clean strings.
    t = TextTemplate("{title}")
    assert validate_item(record({"id": 12.0, "title": "x"}), id_field="id", template=t).id == "12"
    assert validate_item(record({"id": " a1 ", "title": "x"}), id_field="id", template=t).id == "a1"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"title": "x"}, "id", "missing id"),
        ({"id": None, "title": "x"}, "id", "missing id"),
        ({"id": "  ", "title": "x"}, "id", "empty id"),
        ({"id": True, "title": "x"}, "id", "invalid id"),
        ({"id": {"a": 1}, "title": "x"}, "id", "invalid id"),
        ({"id": 1, "title": "", "overview": None}, None, "empty text"),
        ({"id": 1, "title": "x", "vec": "not json"}, "vec", "invalid vector"),
        ({"id": 1, "title": "x", "vec": {"a": 1}}, "vec", "invalid vector"),
        ({"id": 1, "title": "x", "vec": [1, "2", 3]}, "vec", "invalid vector"),
        ({"id": 1, "title": "x", "vec": [True, 1, 0]}, "vec", "invalid vector"),
        ({"id": 1, "title": "x", "vec": []}, "vec", "invalid vector"),
        ({"id": 1, "title": "x", "vec": [1.0, float("nan"), 0.0]}, "vec", "non-finite vector"),
        ({"id": 1, "title": "x", "vec": [1.0, float("inf"), 0.0]}, "vec", "non-finite vector"),
        ({"id": 1, "title": "x", "vec": [1e39, 0.0, 0.0]}, "vec", "non-finite vector"),
        ({"id": 1, "title": "x", "vec": [1.0, 0.0]}, "vec", "wrong vector dimensions"),
        ({"id": 1, "title": "x", "vec": [0, 0, 0]}, "vec", "zero vector"),
        ({"id": 1, "title": "x", "gone": "maybe"}, "gone", "invalid tombstone"),
    ],
)
def test_invalid_items_name_field_and_reason(data, field, reason):
    bad = validate_item(
        record(data, 5),
        id_field="id",
        template=TextTemplate("{title} {overview}"),
        vector_field="vec",
        dims=3,
        tombstone_field="gone",
    )
    assert isinstance(bad, BadRecord)
    assert (bad.source, bad.line, bad.field, bad.reason) == ("cat.jsonl", 5, field, reason)
    assert bad.raw == data


def test_vector_detail_and_csv_json_string_vector():
    bad = validate_item(
        record({"id": 1, "t": "x", "v": [1.0, 2.0]}),
        id_field="id",
        template=TextTemplate("{t}"),
        vector_field="v",
        dims=3,
    )
    assert bad.detail == "expected 3, got 2"
    row = validate_item(
        record({"id": 1, "t": "x", "v": "[1, 2, 3]"}),
        id_field="id",
        template=TextTemplate("{t}"),
        vector_field="v",
        dims=3,
    )
    assert row.vector.tolist() == [1.0, 2.0, 3.0]
    # A vector field that is absent or null is simply "no precomputed vector".
    row = validate_item(
        record({"id": 1, "t": "x", "v": None}), id_field="id", template=TextTemplate("{t}"), vector_field="v", dims=3
    )
    assert row.vector is None and "v" not in row.fields


def test_empty_text_names_the_only_template_field():
    bad = validate_item(record({"id": 1, "title": " "}), id_field="id", template=TextTemplate("{title}"))
    assert (bad.field, bad.reason) == ("title", "empty text")


@pytest.mark.parametrize("flag", [True, "true", "TRUE", 1, "1", "yes", " Yes "])
def test_tombstones_need_no_text(flag):
    row = validate_item(record({"id": 9, "deleted": flag}), id_field="id", template=TEMPLATE, tombstone_field="deleted")
    assert isinstance(row, ItemRow)
    assert (row.id, row.deleted, row.text, row.vector) == ("9", True, "", None)


@pytest.mark.parametrize("flag", [False, "false", 0, "0", "no", "", None])
def test_false_tombstone_values_index_normally(flag):
    row = validate_item(
        record({"id": 9, "title": "T", "deleted": flag}), id_field="id", template=TEMPLATE, tombstone_field="deleted"
    )
    assert (row.deleted, row.text) == (False, "T.")
    assert "deleted" not in row.fields


def test_content_hash_tracks_values_not_key_order():
    base = content_hash("Alien.", {"year": 1979, "tags": ["a", "b"], "brand": {"x": 1, "y": 2}})
    assert base == content_hash("Alien.", {"brand": {"y": 2, "x": 1}, "tags": ["a", "b"], "year": 1979})
    assert base != content_hash("Alien.", {"year": 1980, "tags": ["a", "b"], "brand": {"x": 1, "y": 2}})
    assert base != content_hash("Alien.", {"year": 1979, "tags": ["b", "a"], "brand": {"x": 1, "y": 2}})
    assert base != content_hash("Alien!", {"year": 1979, "tags": ["a", "b"], "brand": {"x": 1, "y": 2}})
    assert content_hash("t", {}) != content_hash("t", {"extra": None})
    # Values JSON cannot hold (Parquet dates) still hash, and a precomputed vector counts.
    assert len(content_hash("t", {"at": datetime(2024, 1, 1)})) == 64
    v = np.array([1.0, 0.0], dtype=np.float32)
    assert content_hash("t", {}, vector=v) != content_hash("t", {})
    assert content_hash("t", {}, vector=v) != content_hash("t", {}, vector=v[::-1].copy())


def test_validated_hash_changes_with_any_indexed_field():
    t = TextTemplate("{title}")
    a = validate_item(record({"id": 1, "title": "x", "price": 10}), id_field="id", template=t)
    b = validate_item(record({"price": 10, "title": "x", "id": 1}), id_field="id", template=t)
    c = validate_item(record({"id": 1, "title": "x", "price": 11}), id_field="id", template=t)
    assert a.content_hash == b.content_hash != c.content_hash


def test_deduplicator_reports_later_occurrences_and_caps_samples():
    dedup = Deduplicator()
    seen = [dedup.add(item_id, line) for line, item_id in enumerate(["a", "b", "a", "c", "a"], 1)]
    assert seen == [False, False, True, False, True]
    assert dedup.duplicates == 2
    assert dedup.samples == [("a", 1, 3), ("a", 1, 5)]
    assert len(dedup) == 3 and "c" in dedup and "z" not in dedup

    many = Deduplicator()
    for line in range(1, 252):
        many.add("same", line)
    assert many.duplicates == 250
    assert len(many.samples) == 100 and many.samples[-1] == ("same", 1, 101)


# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    return Embedder(device="cpu")


def test_importing_embed_does_not_import_torch():
    script = "import sys, vecrank.ingest.embed, vecrank.ingest.records; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"


def test_real_embedder_vectors(embedder):
    assert embedder.model_name == DEFAULT_MODEL_NAME
    vectors = embedder.encode(
        [
            "A cat sits on the mat.",
            "A kitten is sitting on a rug.",
            "Quarterly tax filing deadlines for corporations.",
        ]
    )
    assert embedder.dimensions == 384 and embedder.similarity == "cosine"
    assert embedder.max_seq_length == 256
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.3
    assert embedder.encode([]).shape == (0, 384)
    raw = embedder.encode(["A cat sits on the mat."], normalize_embeddings=False, batch_size=1)
    assert raw[0] / np.linalg.norm(raw[0]) == pytest.approx(vectors[0], abs=1e-5)
    assert isinstance(embedder, TextEmbedder)


def test_real_embedder_logs_device_once():
    records = []

    class Keep(logging.Handler):
        def emit(self, rec):
            records.append(rec.getMessage())

    log = logging.getLogger("vecrank.ingest.embed")
    handler, old_level = Keep(level=logging.INFO), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        fresh = Embedder(device="cpu")
        fresh.encode(["one"], show_progress_bar=False)
        fresh.encode(["two"], show_progress_bar=False)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert records == [f"embedding model {DEFAULT_MODEL_NAME} on device cpu (requested)"]


def test_real_embedder_counts_truncated_texts(embedder):
    long_text = "recommendation " * 400
    assert embedder.count_truncated(["short text", long_text, "another short one"]) == 1
    assert embedder.count_truncated([]) == 0
    with pytest.raises(TypeError, match="list of texts"):
        embedder.encode("a single string")


def test_embedder_accepts_a_local_path_and_names_it(embedder):
    from vecrank.ingest.embed import packaged_model_path

    path = packaged_model_path()
    assert (path / "modules.json").is_file()
    by_path = Embedder(str(path), device="cpu")
    assert by_path.model_name == str(path)
    # Constructing is cheap: nothing loads until a vector or a model property is needed.
    assert by_path._model is None


def test_hash_embedder_is_deterministic_and_word_sensitive():
    fake = HashEmbedder(dims=16)
    a = fake.encode(["red running shoes", "red running shoes", "blue denim jacket", ""])
    b = HashEmbedder(dims=16).encode(["red running shoes"])
    assert a.dtype == np.float32 and a.shape == (4, 16)
    assert np.array_equal(a[0], a[1]) and np.array_equal(a[0], b[0])
    assert np.linalg.norm(a, axis=1) == pytest.approx([1.0] * 4, abs=1e-6)
    assert float(a[0] @ fake.encode(["red running boots"])[0]) > float(a[0] @ a[2])
    assert (fake.model_name, fake.dimensions, fake.similarity) == ("hash-16", 16, "cosine")
    assert HashEmbedder(dims=4, max_seq_length=3).count_truncated(["a b c", "a b c d"]) == 1
    assert isinstance(fake, TextEmbedder)
    # Fixed by the algorithm, not by the process: the same vector in every run.
    script = (
        "from vecrank.ingest.embed import HashEmbedder;"
        "print(HashEmbedder(dims=16).encode(['red running shoes'])[0].tolist())"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(other.stdout) == a[0].tolist()


# ---------------------------------------------------------------------------------------------
# Embedding cache
# ---------------------------------------------------------------------------------------------


def test_cache_round_trip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "emb.sqlite"
    v1, v2 = np.array([0.1, 0.2, 0.3], dtype=np.float32), np.array([1, 0, 0], dtype=np.float64)
    with EmbeddingCache(path) as cache:
        cache.put_many("model-a", {"h1": v1, "h2": v2})
        cache.put_many("model-b", {"h1": v2})
        cache.put_many("model-a", {})
        got = cache.get_many("model-a", ["h1", "h2", "h3", "h1"])
        assert set(got) == {"h1", "h2"} and len(cache) == 3
        assert got["h1"].dtype == np.float32 and np.array_equal(got["h1"], v1)
        assert got["h2"].dtype == np.float32 and got["h2"].tolist() == [1.0, 0.0, 0.0]
    with EmbeddingCache(path) as reopened:
        assert len(reopened) == 3
        assert np.array_equal(reopened.get_many("model-a", ["h1"])["h1"], v1)
        assert reopened.get_many("model-b", ["h1"])["h1"].tolist() == [1.0, 0.0, 0.0]
        assert reopened.get_many("model-c", ["h1"]) == {}
        reopened.put_many("model-a", {"h1": np.array([9, 9, 9], dtype=np.float32)})
        assert reopened.get_many("model-a", ["h1"])["h1"].tolist() == [9.0, 9.0, 9.0]
        assert len(reopened) == 3


def test_cache_ignores_dims_mismatch_and_corrupt_rows(tmp_path):
    path = tmp_path / "emb.sqlite"
    with EmbeddingCache(path) as cache:
        cache.put_many("m", {"three": np.ones(3, dtype=np.float32), "four": np.ones(4, dtype=np.float32)})
        assert set(cache.get_many("m", ["three", "four"], dims=4)) == {"four"}
        assert set(cache.get_many("m", ["three", "four"])) == {"three", "four"}
        cache._conn.execute("UPDATE embeddings SET dims = 5 WHERE content_hash = 'four'")
        assert set(cache.get_many("m", ["three", "four"])) == {"three"}
        with pytest.raises(ValueError, match="1-D"):
            cache.put_many("m", {"bad": np.ones((2, 2), dtype=np.float32)})
        many = {f"h{i}": np.full(2, i, dtype=np.float32) for i in range(2000)}
        cache.put_many("big", many)
        assert len(cache.get_many("big", list(many), dims=2)) == 2000
    with pytest.raises(ValueError, match="closed"):
        cache.get_many("m", ["three"])


def test_cache_commits_survive_a_killed_process(tmp_path):
    path = tmp_path / "emb.sqlite"
    script = (
        "import os, numpy as np\n"
        "from vecrank.ingest.cache import EmbeddingCache\n"
        f"c = EmbeddingCache({str(path)!r})\n"
        "c.put_many('m', {'h': np.array([1, 2], dtype=np.float32)})\n"
        "os._exit(9)\n"
    )  # no close, no cleanup: what a kill leaves behind
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    with EmbeddingCache(path) as cache:
        assert cache.get_many("m", ["h"])["h"].tolist() == [1.0, 2.0]


# ---------------------------------------------------------------------------------------------
# Dead letters
# ---------------------------------------------------------------------------------------------


def test_dead_letters_file_contents_and_counts(tmp_path):
    path = tmp_path / "out" / "dead.jsonl"
    bad_line = BadRecord("cat.jsonl", 3, None, "malformed JSON", '{"id": ', "Expecting value")
    bad_item = BadRecord("cat.jsonl", 4, "id", "missing id", {"title": "x", "at": datetime(2024, 5, 1)})
    with DeadLetters(path) as dead:
        dead.add(bad_line)
        dead.add(bad_item)
        # Flushed per write: readable before close.
        assert len(path.read_text(encoding="utf-8").splitlines()) == 2
        dead.add_failure(source="cat.jsonl", line=9, reason="bulk rejected", detail="mapper_parsing_exception")
        dead.add(BadRecord("cat.jsonl", 11, "id", "missing id", {"title": "y"}))
        assert dead.counts == {"malformed JSON": 1, "missing id": 2, "bulk rejected": 1}
        assert dead.total == 4
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(e["line"], e["field"], e["reason"]) for e in entries] == [
        (3, None, "malformed JSON"),
        (4, "id", "missing id"),
        (9, None, "bulk rejected"),
        (11, "id", "missing id"),
    ]
    assert entries[0]["record"] == '{"id": ' and entries[0]["detail"] == "Expecting value"
    assert entries[1]["record"] == {"title": "x", "at": "2024-05-01 00:00:00"}
    assert entries[2]["record"] is None
    assert set(entries[0]) == {"source", "line", "field", "reason", "detail", "record", "at"}
    at = datetime.fromisoformat(entries[0]["at"])
    assert at.utcoffset().total_seconds() == 0
    with pytest.raises(ValueError, match="closed"):
        dead.add(bad_line)

    # Appends across runs; path=None only counts.
    with DeadLetters(path) as again:
        again.add(bad_line)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 5
    counting = DeadLetters(None)
    counting.add(bad_line)
    counting.close()
    assert counting.counts == {"malformed JSON": 1} and counting.path is None


def test_read_validate_dead_letter_pipeline(tmp_path):
    """The pieces together, as the ingest command will chain them."""
    path = write(
        tmp_path / "cat.jsonl",
        "\n".join(
            [
                json.dumps({"id": 1, "title": "A", "genres": ["x"]}),
                "{broken",
                json.dumps({"id": 2, "title": ""}),
                json.dumps({"id": 1, "title": "A again"}),
                json.dumps({"id": 3, "deleted": "yes"}),
            ]
        )
        + "\n",
    )
    dedup, rows = Deduplicator(), []
    with DeadLetters(tmp_path / "dead.jsonl") as dead:
        for item in read_records(path):
            if isinstance(item, Record):
                item = validate_item(item, id_field="id", template=TEMPLATE, tombstone_field="deleted")
            if isinstance(item, BadRecord):
                dead.add(item)
                continue
            dedup.add(item.id, item.line)
            rows.append(item)
    assert [(r.id, r.text, r.deleted) for r in rows] == [
        ("1", "A. x.", False),
        ("1", "A again.", False),
        ("3", "", True),
    ]
    assert dead.counts == {"malformed JSON": 1, "empty text": 1}
    assert dedup.samples == [("1", 1, 4)]


@pytest.mark.parametrize(
    "data,expected",
    [
        ({"title": "La cravate", "year": 1957}, "La cravate (1957)."),
        ({"title": "La cravate", "year": 1957, "overview": "A man."}, "La cravate (1957). A man."),
        ({"title": "Heat", "genres": ["Crime"]}, "Heat. Crime."),
        ({"title": "Heat", "year": 1995, "genres": ["Crime"], "overview": "LA."}, "Heat (1995). Crime. LA."),
    ],
)
def test_template_keeps_brackets_closed_when_later_fields_are_empty(data, expected):
    from vecrank.ingest.template import TextTemplate

    assert TextTemplate("{title} ({year}). {genres}. {tags}. {overview}").render(data) == expected
