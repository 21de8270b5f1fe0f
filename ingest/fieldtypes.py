"""Declared field types applied to catalog values, so ``_source`` holds what the mapping says.

``--field year=integer`` maps ``year`` as an Elasticsearch integer; without conversion a CSV
catalog would still store the string ``"1995"`` in ``_source``, and Python code reading
``_source`` would disagree with code reading doc values. :func:`apply_field_types` converts the
declared fields of one record before its text is rendered and its content hash taken, so
``"1995"``, ``1995`` and ``1995.0`` make the same document and the same hash.

Rules per type:

* ``integer``/``long``: ints, integral floats and integer text (``" -12 "``, ``"1995.0"``);
  the value must fit the type (32 or 64 bits).
* ``float``/``double``: numbers and decimal text, finite and within the type's range; stored as
  a Python float.
* ``boolean``: ``True``/``False``, ``"true"``/``"false"`` in any case, ``1``/``0`` and
  ``"1"``/``"0"``.
* ``date``: what :func:`vecrank.ingest.events.parse_timestamp` accepts (ISO 8601, epoch seconds
  or milliseconds), stored as epoch milliseconds; the text template shows it as ISO 8601.
* ``keyword``/``text``: strings as they are; a number becomes its string (``12.0`` -> ``"12"``,
  as ids are normalised).

``None``, empty or blank text in a numeric, date or boolean field means "absent": the field is
dropped. Lists are converted element by element (absent elements dropped).

Example:
    >>> apply_field_types({"year": " 1995 ", "price": "9.5", "tags": ["a"]},
    ...                   {"year": "integer", "price": "float"})
    {'year': 1995, 'price': 9.5, 'tags': ['a']}
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import time
from typing import Any

import numpy as np

from vecrank.ingest.eventspec import ms_to_datetime, parse_timestamp

__all__ = ["FieldTypeError", "apply_field_types", "convert_value", "template_view"]

_ABSENT = object()
_INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")  # "1995.0" is how dataframe exports write 1995
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT_MAX = {"float": float(np.finfo(np.float32).max), "double": float(np.finfo(np.float64).max)}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


class FieldTypeError(ValueError):
    """A value that cannot be converted to its field's declared type.

    Attributes:
        field: The field (``None`` from :func:`convert_value`, which does not know it).
        reason: A short, fixed category for dead letters, e.g. ``"not an integer"``.
        detail: The value and what is wrong with it.
    """

    def __init__(self, field: str | None, reason: str, detail: str) -> None:
        super().__init__(f"{field}: {reason} ({detail})" if field else f"{reason} ({detail})")
        self.field, self.reason, self.detail = field, reason, detail


def convert_value(kind: str, value: Any) -> Any:
    """One value (or list of values) as the Elasticsearch type ``kind`` stores it.

    Args:
        kind: One of :data:`vecrank.ingest.indices.FIELD_TYPES`.
        value: The value read from the catalog.

    Returns:
        The converted value; ``None`` where a numeric, date or boolean value is absent (``None``
        or blank text).

    Raises:
        FieldTypeError: The value cannot be converted (``field`` is ``None``).

    Example:
        >>> convert_value("integer", "1995"), convert_value("boolean", "TRUE"), convert_value("keyword", 7)
        (1995, True, '7')
    """
    converted = _convert(kind, value)
    return None if converted is _ABSENT else converted


def apply_field_types(
    data: Mapping[str, Any], field_types: Mapping[str, str], *, skip: Iterable[str | None] = ()
) -> dict[str, Any]:
    """A copy of ``data`` with every declared field converted to its type.

    A dotted name (``dims.width``) is a flat key if there is one, else a path into nested
    objects, as in text templates. Absent numeric, date and boolean values are dropped.

    Args:
        data: The record's fields; not modified.
        field_types: Field name -> declared type.
        skip: Fields left as they are (the id, vector and tombstone fields).

    Returns:
        The converted record.

    Raises:
        FieldTypeError: A value cannot be converted; ``field`` names it.
    """
    skipped = set(skip)
    out = dict(data)
    for name, kind in field_types.items():
        if name not in skipped:

            def convert(value: Any, kind: str = kind, name: str = name) -> Any:
                return _convert_field(name, kind, value)

            out = _replace(out, name, convert)
    return out


def template_view(typed: Mapping[str, Any], field_types: Mapping[str, str]) -> Mapping[str, Any]:
    """What the text template sees of a converted record: dates as ISO 8601, the rest as stored.

    Epoch milliseconds mean nothing to a language model; ``1995-10-30`` (or
    ``1995-10-30T12:00:00Z`` when there is a time of day) does, and it is the same whichever way
    the catalog spelled the date.
    """
    dates = [name for name, kind in field_types.items() if kind == "date"]
    if not dates:
        return typed
    view = dict(typed)
    for name in dates:
        view = _replace(view, name, _iso_dates)
    return view


def _convert_field(name: str, kind: str, value: Any) -> Any:
    try:
        return _convert(kind, value)
    except FieldTypeError as exc:
        raise FieldTypeError(name, exc.reason, exc.detail) from None


def _convert(kind: str, value: Any) -> Any:
    convert = _CONVERTERS.get(kind)
    if convert is None:
        raise ValueError(f"unknown field type {kind!r}")
    if isinstance(value, (list, tuple)):
        out = []
        for position, element in enumerate(value):
            try:
                converted = convert(element)
            except FieldTypeError as exc:
                raise FieldTypeError(None, exc.reason, f"element {position}: {exc.detail}") from None
            if converted is not _ABSENT:
                out.append(converted)
        return out
    return convert(value)


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", str: "text"}
    return names.get(type(value), type(value).__name__)


def _integer(kind: str) -> Callable[[Any], Any]:
    low, high = _INT_RANGES[kind]

    def convert(value: Any) -> Any:
        if _is_absent(value):
            return _ABSENT
        if isinstance(value, bool):
            raise FieldTypeError(None, "not an integer", f"{value!r} is a boolean")
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise FieldTypeError(None, "not an integer", f"{value!r} is not a whole number")
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str):
            text = value.strip()
            if not _INTEGER.fullmatch(text):
                raise FieldTypeError(None, "not an integer", f"{value!r} is not an integer")
            number = int(text.split(".")[0])
        else:
            raise FieldTypeError(None, "not an integer", f"got {_type_name(value)}")
        if not low <= number <= high:
            raise FieldTypeError(None, f"out of range for {kind}", f"{number} is outside {low}..{high}")
        return number

    return convert


def _floating(kind: str) -> Callable[[Any], Any]:
    limit = _FLOAT_MAX[kind]

    def convert(value: Any) -> Any:
        if _is_absent(value):
            return _ABSENT
        if isinstance(value, bool):
            raise FieldTypeError(None, "not a number", f"{value!r} is a boolean")
        if isinstance(value, str):
            text = value.strip()
            if not _DECIMAL.fullmatch(text):
                raise FieldTypeError(None, "not a number", f"{value!r} is not a decimal number")
            value = text
        elif not isinstance(value, (int, float)):
            raise FieldTypeError(None, "not a number", f"got {_type_name(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
        if math.isnan(number):
            raise FieldTypeError(None, "not a number", f"{value!r} is NaN")
        if abs(number) > limit:  # infinity included
            raise FieldTypeError(None, f"out of range for {kind}", f"{value!r} is beyond ±{limit:g}")
        return number

    return convert


def _boolean(value: Any) -> Any:
    if _is_absent(value):
        return _ABSENT
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise FieldTypeError(None, "not a boolean", f"{value!r} is none of true, false, 1, 0")


def _date(value: Any) -> Any:
    if _is_absent(value):
        return _ABSENT
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise FieldTypeError(None, "not a date", str(exc)) from None


def _string(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # strings as they are; objects are for Elasticsearch to judge
    if isinstance(value, float):
        if not math.isfinite(value):
            return value
        # 12.0 is how dataframes spell 12; ids follow the same rule (records.normalise_id).
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "integer": _integer("integer"),
    "long": _integer("long"),
    "float": _floating("float"),
    "double": _floating("double"),
    "boolean": _boolean,
    "date": _date,
    "keyword": _string,
    "text": _string,
}


def _iso_dates(value: Any) -> Any:
    if isinstance(value, list):
        return [_iso_dates(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int):
        return value

    moment = ms_to_datetime(value)
    if moment.time() == time(0):
        return moment.date().isoformat()
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _replace(data: dict[str, Any], name: str, change: Callable[[Any], Any]) -> dict[str, Any]:
    """``data`` with the value at ``name`` changed by ``change``; an ``_ABSENT`` result removes it.

    ``name`` is found as a text template finds it: a flat key first, else a dotted path through
    nested objects. Objects on the path are copied, never modified.
    """
    if name in data:
        return _set(data, name, change(data[name]))
    return _replace_path(data, name.split("."), change) if "." in name else data


def _replace_path(data: Mapping[str, Any], parts: list[str], change: Callable[[Any], Any]) -> dict[str, Any]:
    head, rest = parts[0], parts[1:]
    if head not in data:
        return dict(data)
    if not rest:
        return _set(dict(data), head, change(data[head]))
    if not isinstance(data[head], Mapping):
        return dict(data)
    return {**data, head: _replace_path(data[head], rest, change)}


def _set(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    if value is _ABSENT:
        return {k: v for k, v in data.items() if k != key}
    return {**data, key: value}
