"""Text templates: how an item's fields become the one text that gets embedded.

A template is a ``str.format``-style pattern with named fields, for example
``"{title}. {genres}. {overview}"``. Rendering is forgiving about the data (missing fields,
``None``, lists) and strict about the pattern (checked once, at construction), so a typo in the
pattern fails before the first record is read.

Example:
    >>> t = TextTemplate("{title}. {genres}. {overview}")
    >>> t.fields
    ('title', 'genres', 'overview')
    >>> t.render({"title": "Alien", "genres": ["Horror", "Sci-Fi"], "overview": None})
    'Alien. Horror, Sci-Fi.'
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TextTemplate"]

# Punctuation that may end a sentence: a trailing gap keeps one of these so that
# "{title}. {overview}" with no overview still reads "Title." rather than "Title".
_TERMINAL = ".!?"
# What a leading gap may start with that only made sense after a (now empty) previous field.
_LEADING_JUNK = " \t\r\n.,;:|-/"
_OPEN_TO_CLOSE = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True, slots=True)
class _Piece:
    """A literal followed by an optional field, as ``string.Formatter.parse`` yields them."""

    literal: str
    field: str | None


class TextTemplate:
    """A validated ``str.format``-style pattern that renders records into text.

    Only plain named fields are allowed (``{title}``, or ``{brand.name}`` to reach into a nested
    object); positional fields, indexing, conversions (``!r``) and format specs (``:.2f``) are
    rejected, because catalog values arrive as strings from CSV and a spec would fail on them
    record by record instead of once here.

    Args:
        pattern: The pattern, for example ``"{title}. {genres}. {overview}"``. Literal braces
            are written ``{{`` and ``}}``.

    Raises:
        ValueError: The pattern does not parse, names no field, or uses an unsupported feature;
            the message names the offending part.
    """

    __slots__ = ("_pattern", "_pieces", "_fields")

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise ValueError(f"text template must be a string, got {type(pattern).__name__}")
        self._pattern = pattern
        self._pieces = _parse(pattern)
        names: list[str] = []
        for piece in self._pieces:
            if piece.field is not None and piece.field not in names:
                names.append(piece.field)
        if not names:
            raise ValueError(f"text template {pattern!r} references no field; write e.g. '{{title}}'")
        self._fields = tuple(names)

    @property
    def pattern(self) -> str:
        """The pattern as given."""
        return self._pattern

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names the pattern references, in order of first use, without repeats."""
        return self._fields

    def render(self, data: Mapping[str, Any]) -> str:
        """Renders one record.

        Missing and ``None`` fields render as empty; lists render joined with ``", "``. The
        template's own separators next to empty fields are dropped, so with
        ``"{title}. {genres}. {overview}"`` a record with only a title renders as ``"Title."``.
        Only template text is cleaned up; field values are used as given (stripped).

        Args:
            data: The record's fields.

        Returns:
            The text, stripped; empty when every referenced field is empty.

        Example:
            >>> TextTemplate("{title} ({year}): {overview}").render({"title": "Heat", "overview": "LA."})
            'Heat: LA.'
        """
        values = [_render_value(_lookup(data, p.field)) if p.field else "" for p in self._pieces]
        return _join(self._pieces, values)

    def to_dict(self) -> dict[str, str]:
        """The template as JSON-ready data (it is stored in the items index ``_meta``)."""
        return {"pattern": self._pattern}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextTemplate:
        """Rebuilds a template from :meth:`to_dict` output.

        Raises:
            ValueError: ``data`` has no string ``pattern``, or the pattern is invalid.
        """
        pattern = data.get("pattern") if isinstance(data, Mapping) else None
        if not isinstance(pattern, str):
            raise ValueError("text template data needs a string 'pattern'")
        return cls(pattern)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextTemplate):
            return NotImplemented
        return self._pattern == other._pattern

    def __hash__(self) -> int:
        return hash(self._pattern)

    def __repr__(self) -> str:
        return f"TextTemplate({self._pattern!r})"


def _parse(pattern: str) -> list[_Piece]:
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"invalid text template {pattern!r}: {exc}") from None
    pieces = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            _check_field(pattern, name, spec, conversion)
        pieces.append(_Piece(literal, name))
    return pieces


def _check_field(pattern: str, name: str, spec: str | None, conversion: str | None) -> None:
    where = f"in text template {pattern!r}"
    if not name.strip():
        raise ValueError(f"positional field '{{}}' {where}; name the field, e.g. '{{title}}'")
    if name.isdigit():
        raise ValueError(f"positional field '{{{name}}}' {where}; name the field, e.g. '{{title}}'")
    if "[" in name or "]" in name:
        raise ValueError(f"indexing in field '{{{name}}}' is not supported {where}")
    if conversion:
        raise ValueError(f"conversion '!{conversion}' in field '{name}' is not supported {where}")
    if spec:
        raise ValueError(f"format spec ':{spec}' in field '{name}' is not supported {where}")
    if any(not part for part in name.split(".")):
        raise ValueError(f"empty name segment in field '{{{name}}}' {where}")


def _lookup(data: Mapping[str, Any], name: str) -> Any:
    # A flat key wins ("brand.name" may be a CSV column); otherwise dots walk nested objects.
    if name in data:
        return data[name]
    node: Any = data
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _render_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and not math.isfinite(value):
        # NaN is how dataframe exports spell "missing".
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(text for text in (_render_value(v) for v in value) if text)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value).strip()


def _join(pieces: list[_Piece], values: list[str]) -> str:
    """Concatenates literals and values, keeping one separator per gap left by empty fields.

    A *gap* is the template text between two non-empty values (or an end of the text) that has
    at least one empty field inside it. In the middle, the gap's last literal is kept (it is the
    label or separator that introduces the next value); at the start, the last literal without
    leading separators; at the end, nothing but a sentence end if the template had one there.
    """
    out: list[str] = []
    gap: list[str] = []  # literals since the last non-empty value
    had_empty = False
    started = False
    for piece, value in zip(pieces, values, strict=True):
        gap.append(piece.literal)
        if piece.field is None:
            continue
        if not value:
            had_empty = True
            continue
        out.append(_bridge(gap, had_empty, leading=not started, text_so_far="".join(out)))
        out.append(value)
        gap, had_empty, started = [], False, True
    if started:
        out.append(_tail(gap, had_empty, text_so_far="".join(out)))
    return "".join(out).strip()


def _bridge(gap: list[str], had_empty: bool, *, leading: bool, text_so_far: str) -> str:
    if not had_empty:
        return "".join(gap)
    kept = gap[-1]
    if leading:
        return kept.lstrip(_LEADING_JUNK)
    closers, rest = _owed_closers(text_so_far, gap[0])
    return closers + _drop_orphan_closers(rest + "".join(gap[1:-1]), kept)


def _tail(gap: list[str], had_empty: bool, *, text_so_far: str) -> str:
    if not had_empty:
        return "".join(gap)
    closers, rest = _owed_closers(text_so_far, gap[0])
    joined = (rest + "".join(gap[1:])).strip()
    text_so_far += closers
    ends_sentence = joined[:1] in _TERMINAL or joined[-1:] in _TERMINAL
    if ends_sentence and joined and text_so_far[-1:] not in _TERMINAL:
        return closers + (joined[0] if joined[0] in _TERMINAL else joined[-1])
    return closers


def _owed_closers(text_so_far: str, literal: str) -> tuple[str, str]:
    """Split off the start of ``literal`` that closes brackets opened in the text already written.

    ``"{title} ({year}). {genres}"`` with a year but no genres must keep the ``")"`` after the
    year: it closes the ``"("`` before it, whatever is dropped after.
    """
    unclosed = _unclosed(text_so_far)
    i = 0
    while i < len(literal) and unclosed and literal[i] == unclosed[-1]:
        unclosed.pop()
        i += 1
    return literal[:i], literal[i:]


def _drop_orphan_closers(dropped: str, kept: str) -> str:
    """Removes closing brackets in ``kept`` whose opening bracket was in the dropped text.

    ``"{title} ({year}): {overview}"`` without a year keeps ``"): "``; its ``")"`` belonged to
    the dropped ``" ("``, so the result reads ``"Title: Overview"``.
    """
    unclosed = _unclosed(dropped)
    result = kept
    for closer in reversed(unclosed):
        index = result.find(closer)
        if index == -1:
            break
        result = result[:index] + result[index + 1 :]
    return result


def _unclosed(text: str) -> list[str]:
    """The closers that ``text`` still owes, innermost last."""
    stack: list[str] = []
    for ch in text:
        if ch in _OPEN_TO_CLOSE:
            stack.append(_OPEN_TO_CLOSE[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
    return stack
