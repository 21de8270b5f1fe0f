"""Declared field types (``--field NAME=TYPE``) applied at ingest: ``_source`` holds the type the
mapping declares, the content hash does not depend on how a value was spelled, and a value that
does not convert is a bad row with its file, line and field.

The unit tests need no Elasticsearch; the last tests ingest a CSV catalog into the real test
node with the real packaged model, as the other item tests do.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clihelp import connection_args, run_cli

from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.deadletter import DeadLetters
from vecrank.ingest.events import DATE_FORMAT
from vecrank.ingest.fieldtypes import FieldTypeError, apply_field_types, convert_value, template_view
from vecrank.ingest.records import BadRecord, ItemRow, Record, read_records, validate_item
from vecrank.ingest.template import TextTemplate


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


TOY_STORY_MS = ms(1995, 11, 22)


def refused(kind: str, value) -> FieldTypeError:
    with pytest.raises(FieldTypeError) as info:
        convert_value(kind, value)
    assert info.value.field is None
    return info.value


# ---------------------------------------------------------------------------------------------
# One value
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1995, 1995.0, "1995", " 1995 ", "+1995", "1995.0", "1995.", "\t1995\n"])
def test_integer_accepts_ints_integral_floats_and_integer_text(value):
    out = convert_value("integer", value)
    assert out == 1995 and type(out) is int


def test_integer_signs_and_the_limits_of_each_type():
    assert convert_value("integer", "-7") == -7
    assert convert_value("integer", 2**31 - 1) == 2**31 - 1
    assert convert_value("integer", -(2**31)) == -(2**31)
    assert convert_value("long", "2147483648") == 2**31
    assert convert_value("long", -(2**63)) == -(2**63)
    for kind, value in [
        ("integer", 2**31),
        ("integer", "-2147483649"),
        ("integer", 3e9),
        ("long", 2**63),
        ("long", 1e19),
    ]:
        err = refused(kind, value)
        assert err.reason == f"out of range for {kind}", value


@pytest.mark.parametrize(
    "value", ["19.5", 19.5, "abc", "1e3", "1_000", "0x10", "١٩٩٥", "12 3", True, False, math.nan, math.inf, {"y": 1}]
)
def test_integer_refuses_fractions_words_booleans_and_non_finite(value):
    err = refused("integer", value)
    assert err.reason == "not an integer"
    assert err.detail


def test_integer_detail_names_the_value():
    assert refused("integer", "19.5").detail == "'19.5' is not an integer"
    assert refused("integer", True).detail == "True is a boolean"
    assert refused("integer", {"a": 1}).detail == "got an object"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (9.99, 9.99),
        ("9.99", 9.99),
        (" -1e3 ", -1000.0),
        (".5", 0.5),
        ("10", 10.0),
        (10, 10.0),
        ("+2.", 2.0),
    ],
)
def test_float_accepts_numbers_and_numeric_text_as_floats(value, expected):
    out = convert_value("float", value)
    assert out == expected and type(out) is float
    assert type(convert_value("double", value)) is float


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-Infinity", math.nan, math.inf, -math.inf, "abc", "1,5", "1_0", True, [[1]]]
)
def test_float_refuses_non_finite_words_and_booleans(value):
    with pytest.raises(FieldTypeError) as info:
        convert_value("double", value)
    assert info.value.reason in {"not a number", "out of range for double"}


def test_float_range_is_the_elasticsearch_types():
    assert refused("float", 1e39).reason == "out of range for float"  # beyond float32
    assert convert_value("double", 1e39) == 1e39
    assert refused("double", "1e400").reason == "out of range for double"
    assert refused("double", 10**400).reason == "out of range for double"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("FALSE", False),
        (" True ", True),
        (1, True),
        (0, False),
        ("1", True),
        ("0", False),
        (1.0, True),
    ],
)
def test_boolean_accepts_true_false_and_one_zero(value, expected):
    assert convert_value("boolean", value) is expected


@pytest.mark.parametrize("value", ["yes", "no", "t", 2, -1, 0.5, "maybe", {"a": 1}])
def test_boolean_refuses_anything_else(value):
    err = refused("boolean", value)
    assert err.reason == "not a boolean"


@pytest.mark.parametrize(
    "value",
    [
        "1995-11-22",
        "1995-11-22T00:00:00Z",
        "1995-11-22T01:00:00+01:00",
        816998400,
        "816998400",
        816998400000,
        816998400.0,
    ],
)
def test_date_accepts_iso_and_epoch_seconds_or_millis_and_stores_millis(value):
    out = convert_value("date", value)
    assert out == TOY_STORY_MS and type(out) is int


@pytest.mark.parametrize("value", ["abc", "22/11/1995", True, math.nan, {"a": 1}, "1995-13-01"])
def test_date_refuses_what_parse_timestamp_refuses(value):
    err = refused("date", value)
    assert err.reason == "not a date" and err.detail


@pytest.mark.parametrize("kind", ["keyword", "text"])
def test_keyword_and_text_keep_strings_and_stringify_numbers(kind):
    assert convert_value(kind, " Abc ") == " Abc "
    assert convert_value(kind, 1995) == "1995"
    assert convert_value(kind, 12.0) == "12"  # as ids are normalised
    assert convert_value(kind, 9.5) == "9.5"
    assert convert_value(kind, None) is None
    assert convert_value(kind, ["a", 2]) == ["a", "2"]


@pytest.mark.parametrize("kind", ["integer", "long", "float", "double", "boolean", "date"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_blank_numeric_date_and_boolean_values_are_absent(kind, value):
    assert convert_value(kind, value) is None
    assert apply_field_types({"id": 1, "f": value}, {"f": kind}) == {"id": 1}


def test_lists_are_converted_element_by_element():
    assert convert_value("integer", ["1", 2, 3.0, None, ""]) == [1, 2, 3]
    assert convert_value("date", ["1995-11-22", 816998400]) == [TOY_STORY_MS, TOY_STORY_MS]
    err = refused("integer", ["1", "two", "3"])
    assert (err.reason, err.detail) == ("not an integer", "element 1: 'two' is not an integer")


# ---------------------------------------------------------------------------------------------
# One record
# ---------------------------------------------------------------------------------------------


def test_apply_field_types_converts_only_declared_fields_and_leaves_the_input_alone():
    data = {"id": "7", "year": "1995", "price": "9.99", "tags": ["1", "2"], "brand": {"size": "42"}}
    types = {"year": "integer", "price": "float", "brand.size": "integer", "missing": "date", "id": "integer"}
    out = apply_field_types(data, types, skip=["id"])
    assert out == {"id": "7", "year": 1995, "price": 9.99, "tags": ["1", "2"], "brand": {"size": 42}}
    assert data == {"id": "7", "year": "1995", "price": "9.99", "tags": ["1", "2"], "brand": {"size": "42"}}
    # A flat dotted key (a CSV column named "brand.size") wins over the nested path.
    assert apply_field_types({"brand.size": "3"}, {"brand.size": "integer"}) == {"brand.size": 3}
    with pytest.raises(FieldTypeError) as info:
        apply_field_types({"brand": {"size": "XL"}}, {"brand.size": "integer"})
    assert (info.value.field, info.value.reason) == ("brand.size", "not an integer")


def test_template_view_shows_dates_as_iso():
    typed = apply_field_types(
        {"d": "1995-11-22", "t": "1995-11-22T12:30:00.250Z", "l": [816998400]}, {"d": "date", "t": "date", "l": "date"}
    )
    view = template_view(typed, {"d": "date", "t": "date", "l": "date"})
    assert view == {"d": "1995-11-22", "t": "1995-11-22T12:30:00.250Z", "l": ["1995-11-22"]}
    assert typed["d"] == TOY_STORY_MS  # the stored value stays millis


TYPES = {"year": "integer", "price": "float", "released": "date", "in_stock": "boolean", "sku": "keyword"}
TEMPLATE = TextTemplate("{title} ({year}), released {released}")


def item(data: dict, line: int = 2, source: str = "catalog.csv", **kwargs) -> ItemRow | BadRecord:
    return validate_item(Record(source, line, data), id_field="id", template=TEMPLATE, field_types=TYPES, **kwargs)


def test_validated_item_holds_typed_fields_and_renders_them():
    row = item(
        {
            "id": "1",
            "title": "Toy Story",
            "year": "1995",
            "price": "9.99",
            "released": "1995-11-22",
            "in_stock": "TRUE",
            "sku": 862.0,
        }
    )
    assert isinstance(row, ItemRow)
    assert row.fields == {
        "title": "Toy Story",
        "year": 1995,
        "price": 9.99,
        "released": TOY_STORY_MS,
        "in_stock": True,
        "sku": "862",
    }
    assert row.text == "Toy Story (1995), released 1995-11-22"


def test_the_hash_does_not_depend_on_how_a_value_was_spelled():
    spellings = [
        {"id": "1", "title": "Heat", "year": "1995", "price": "12", "released": "1995-11-22", "in_stock": "true"},
        {"id": 1, "title": "Heat", "year": 1995, "price": 12, "released": 816998400, "in_stock": True},
        {"id": 1.0, "title": "Heat", "year": 1995.0, "price": 12.0, "released": 816998400000, "in_stock": 1},
        {
            "id": " 1 ",
            "title": "Heat",
            "year": " +1995 ",
            "price": "1.2e1",
            "released": "1995-11-22T00:00:00Z",
            "in_stock": "1",
        },
    ]
    rows = [item(s) for s in spellings]
    assert all(isinstance(r, ItemRow) for r in rows)
    assert len({r.content_hash for r in rows}) == 1
    assert len({r.text for r in rows}) == 1


def test_typed_jsonl_items_keep_their_stored_hash():
    # A JSONL catalog that already spells its integers as integers hashes as before declaring
    # (or converting) types, so re-ingesting it after this change writes nothing.
    data = {"id": 1, "title": "Alien", "year": 1979, "genres": ["Horror"]}
    t = TextTemplate("{title} ({year})")
    typed = validate_item(
        Record("c.jsonl", 1, data), id_field="id", template=t, field_types={"year": "integer", "genres": "keyword"}
    )
    untyped = validate_item(Record("c.jsonl", 1, data), id_field="id", template=t)
    assert typed.content_hash == untyped.content_hash and typed.fields == untyped.fields


def test_empty_cells_of_typed_fields_are_dropped_and_other_empty_cells_kept():
    row = item({"id": "4", "title": "No year", "year": None, "price": "", "released": None, "sku": None})
    assert row.fields == {"title": "No year", "sku": None}
    assert row.text == "No year"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("year", "abc", "not an integer"),
        ("year", "19.5", "not an integer"),
        ("year", True, "not an integer"),
        ("year", 2**40, "out of range for integer"),
        ("price", "nan", "not a number"),
        ("price", "cheap", "not a number"),
        ("released", "yesterday", "not a date"),
        ("in_stock", "yes", "not a boolean"),
    ],
)
def test_a_value_that_does_not_convert_is_a_bad_record_naming_the_field(field, value, reason):
    data = {"id": "3", "title": "Bad", "year": "2001", field: value}
    bad = item(data, line=4)
    assert isinstance(bad, BadRecord)
    assert (bad.source, bad.line, bad.field, bad.reason) == ("catalog.csv", 4, field, reason)
    assert bad.raw == data  # the record as read, not half-converted
    assert str(value) in bad.detail


def test_id_vector_and_tombstone_fields_are_not_converted():
    t = TextTemplate("{title}")
    types = {"id": "integer", "gone": "integer", "vec": "float"}
    row = validate_item(
        Record("c.csv", 2, {"id": "a1", "title": "x", "gone": "no", "vec": "[1, 2]"}),
        id_field="id",
        template=t,
        field_types=types,
        tombstone_field="gone",
        vector_field="vec",
        dims=2,
    )
    assert isinstance(row, ItemRow) and row.id == "a1" and row.vector.tolist() == [1.0, 2.0]
    # A deletion needs no valid fields, as it needs no text.
    gone = validate_item(
        Record("c.csv", 3, {"id": "a2", "gone": "yes", "year": "abc"}),
        id_field="id",
        template=t,
        field_types={"year": "integer"},
        tombstone_field="gone",
    )
    assert isinstance(gone, ItemRow) and gone.deleted


def test_csv_rows_that_do_not_convert_become_dead_letters_with_file_line_and_field(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "id,title,year,price,released\n1,Toy Story,1995,9.99,1995-11-22\n"
        '2,"Heat\nthe film",1995,12,\n3,Bad,abc,5,2001-01-01\n'
    )
    dead_path = tmp_path / "dead.jsonl"
    rows = []
    with DeadLetters(dead_path) as dead:
        for rec in read_records(path):
            checked = rec if isinstance(rec, BadRecord) else item(rec.data, rec.line, rec.source)
            if isinstance(checked, BadRecord):
                dead.add(checked)
            else:
                rows.append(checked)
    assert [(r.id, r.fields["year"], r.line) for r in rows] == [("1", 1995, 2), ("2", 1995, 3)]
    assert "released" not in rows[1].fields
    (letter,) = [json.loads(line) for line in dead_path.read_text().splitlines()]
    assert (letter["source"], letter["line"], letter["field"], letter["reason"]) == (
        str(path),
        5,
        "year",
        "not an integer",
    )
    assert letter["record"]["year"] == "abc" and "'abc'" in letter["detail"]


def test_items_mapping_reads_declared_dates_as_epoch_millis():
    spec = indices.IndexSpec(
        model="m", dims=4, template="{title}", field_types={"released": "date", "year": "integer", "text": "date"}
    )
    props = indices.items_mapping(spec)["properties"]
    assert props["released"] == {"type": "date", "format": DATE_FORMAT}
    assert DATE_FORMAT.split("||")[0] == "epoch_millis"
    assert props["src_text"] == {"type": "date", "format": DATE_FORMAT}
    assert props["year"] == {"type": "integer"}


# ---------------------------------------------------------------------------------------------
# Against the real node
# ---------------------------------------------------------------------------------------------

CSV = (
    "id,title,year,price,released\r\n"
    "1,Toy Story,1995,9.99,1995-11-22\r\n"
    "2,Heat,1995,12,1995-12-15T00:00:00Z\r\n"
    "3,Bad Year,abc,5,2001-01-01\r\n"
    "4,No Year,,7.5,\r\n"
)
# The same catalog as JSON Lines, spelled the way JSON spells it (and without the bad row).
JSONL = [
    {"id": 1, "title": "Toy Story", "year": 1995, "price": 9.99, "released": 816998400},
    {"id": 2, "title": "Heat", "year": 1995.0, "price": 12, "released": "1995-12-15"},
    {"id": 4, "title": "No Year", "price": "7.5"},
]
FIELDS = ["--field", "year=integer", "--field", "price=float", "--field", "released=date"]


def ingest_cli(capsys, settings, path: Path, dead: Path, *extra: str):
    result = run_cli(
        capsys,
        *connection_args(settings),
        "--index-prefix",
        settings.index_prefix,
        "ingest",
        "items",
        str(path),
        "--template",
        "{title} ({year})",
        *FIELDS,
        "--no-cache",
        "--dead-letter",
        str(dead),
        "--json",
        *extra,
    )
    return result, (json.loads(result.out) if result.out.strip() else None)


def test_csv_catalog_with_declared_types_stores_typed_source(es, settings_for, tmp_path, capsys):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(CSV)
    dead = tmp_path / "dead.jsonl"
    result, out = ingest_cli(capsys, settings_for, catalog, dead)
    assert result.code == 1, result.err  # one bad row
    assert (out["read"], out["written"], out["failed"], out["reconciles"]) == (4, 3, 1, True)
    assert out["failures"] == {"not an integer": 1}
    (letter,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert (letter["source"], letter["line"], letter["field"], letter["reason"]) == (
        str(catalog),
        4,
        "year",
        "not an integer",
    )
    assert letter["record"]["year"] == "abc"

    alias = settings_for.index("items")
    hits = es.search(
        index=alias,
        size=10,
        query={"match_all": {}},
        source=["year", "price", "released", "text"],
        docvalue_fields=["year", "price", {"field": "released", "format": "epoch_millis"}],
    )["hits"]["hits"]
    by_id = {h["_id"]: h for h in hits}
    assert sorted(by_id) == ["1", "2", "4"]
    toy = by_id["1"]["_source"]
    assert toy["year"] == 1995 and type(toy["year"]) is int
    assert toy["price"] == 9.99 and type(toy["price"]) is float
    assert toy["released"] == TOY_STORY_MS == 816998400000
    assert toy["text"] == "Toy Story (1995)"
    heat = by_id["2"]["_source"]
    assert type(heat["price"]) is float and heat["price"] == 12.0
    assert heat["released"] == ms(1995, 12, 15)
    assert "year" not in by_id["4"]["_source"] and "released" not in by_id["4"]["_source"]
    # What Python reads from _source is what the plugin reads from doc values.
    for h in (by_id["1"], by_id["2"]):
        values = h["fields"]
        assert values["year"] == [h["_source"]["year"]]
        assert values["price"][0] == pytest.approx(h["_source"]["price"], rel=1e-6)
        assert int(values["released"][0]) == h["_source"]["released"]
    live = indices.live_index(es, settings_for)
    props = es.indices.get_mapping(index=live)[live]["mappings"]["properties"]
    assert (props["year"]["type"], props["price"]["type"]) == ("integer", "float")
    assert props["released"] == {"type": "date", "format": DATE_FORMAT}
    assert es.count(index=alias, query={"range": {"released": {"gte": "1995-12-01"}}})["count"] == 1

    # Re-ingesting the same catalog, or the same items spelled as JSON, changes nothing.
    result, again = ingest_cli(capsys, settings_for, catalog, tmp_path / "dead2.jsonl")
    assert (again["written"], again["skipped_unchanged"], again["failed"]) == (0, 3, 1)
    as_json = tmp_path / "catalog.jsonl"
    as_json.write_text("".join(json.dumps(r) + "\n" for r in JSONL))
    result, from_json = ingest_cli(capsys, settings_for, as_json, tmp_path / "dead3.jsonl")
    assert result.code == 0, result.err
    assert (from_json["written"], from_json["skipped_unchanged"]) == (0, 3)


def test_strict_stops_at_a_value_that_does_not_convert(es, settings_for, tmp_path):
    from vecrank.ingest.embed import HashEmbedder
    from vecrank.ingest.items import ItemSource, ingest_items

    catalog = tmp_path / "catalog.csv"
    catalog.write_text(CSV)
    source = ItemSource(
        template="{title} ({year})", field_types={"year": "integer", "price": "float", "released": "date"}
    )
    with pytest.raises(VecrankError, match=r"catalog\.csv:4 field 'year': not an integer \('abc' is not an integer\)"):
        ingest_items(es, settings_for, catalog, source, embedder=HashEmbedder(384), strict=True)


def test_reindex_renders_and_hashes_typed_fields_as_ingest_does(es, settings_for, tmp_path):
    from vecrank.ingest.embed import HashEmbedder
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.ingest.reindex import reindex

    embedder = HashEmbedder(384)
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(CSV)
    types = {"year": "integer", "price": "float", "released": "date"}
    first = ingest_items(
        es, settings_for, catalog, ItemSource(template="{title}", field_types=types), embedder=embedder
    )
    assert (first.written, first.failed) == (3, 1)

    # A new template that shows the date: the text has the date, not its epoch milliseconds.
    new_template = "{title}, released {released}"
    summary = reindex(es, settings_for, embedder=embedder, template=new_template)
    assert summary.switched and summary.failed == 0
    toy = es.get(index=settings_for.index("items"), id="1")["_source"]
    assert toy["text"] == "Toy Story, released 1995-11-22"
    assert (toy["year"], toy["released"]) == (1995, TOY_STORY_MS)
    # Ingesting the catalog with that template now finds every item unchanged.
    again = ingest_items(
        es, settings_for, catalog, ItemSource(template=new_template, field_types=types), embedder=embedder
    )
    assert (again.written, again.skipped_unchanged) == (0, 3)
