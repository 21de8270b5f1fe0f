"""What an event may be: its types and their weights, its plausible bounds, its instant.

The rules of :mod:`vecrank.ingest.events` that need neither Elasticsearch nor the rest of ingest:
the modules that events builds on (indices, signals, field types, users) read them from here,
and events re-exports them.

Example:
    >>> parse_timestamp("2024-06-01T02:00:00+02:00") == parse_timestamp(1717200000)
    True
    >>> EventTypes().weight("purchase")
    3.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DATE_FORMAT", "NUMBER", "EventBounds", "EventTypes", "ms_to_datetime", "parse_timestamp"]

# Below this a number is read as epoch seconds, above it as epoch milliseconds: 1e11 seconds is
# the year 5138, while 1e11 milliseconds is March 1973, earlier than any interaction log.
_SECONDS_LIMIT = 1e11
#: A number as text (what ``float`` reads, without inf and nan).
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
#: Date fields hold epoch milliseconds. Elasticsearch's default format tries ISO first, which
#: reads a small number such as 5000 as the year 5000; epoch_millis first reads it as intended.
DATE_FORMAT = "epoch_millis||strict_date_optional_time"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _default_weights() -> dict[str, float]:
    return {"impression": 0.0, "click": 1.0, "cart": 2.0, "purchase": 3.0, "rating": 1.0}


class EventTypes(BaseModel):
    """The event types vecrank accepts and how much each counts in popularity.

    A weight is the contribution of one event of that type to the windowed popularity signals;
    types in ``negative`` (say ``"dislike"``) contribute minus their weight. For ratings the
    event's ``value`` carries the rating itself; the weight only says how much *having rated*
    counts. ``impression``, ``click`` and ``rating`` name the types that the CTR and rating
    signals read.

    Example:
        >>> types = EventTypes(weights={"view": 1, "like": 2, "dislike": 1}, negative={"dislike"})
        >>> EventTypes.from_dict(types.to_dict()) == types
        True
        >>> types.weight("dislike")
        -1.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: dict[str, float] = Field(default_factory=_default_weights)
    negative: frozenset[str] = frozenset()
    impression: str = "impression"
    click: str = "click"
    rating: str | None = "rating"

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        if not weights:
            raise ValueError("weights: at least one event type is needed")
        for name, weight in weights.items():
            if not name or name != name.strip():
                raise ValueError(f"weights: event type {name!r} must be non-empty without spaces around it")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"weights[{name!r}] must be a finite number >= 0 (use `negative` "
                    f"for types that count against an item), not {weight!r}"
                )
        return weights

    @model_validator(mode="after")
    def _check_negative(self) -> EventTypes:
        unknown = self.negative - set(self.weights)
        if unknown:
            raise ValueError(f"negative: {', '.join(sorted(unknown))} not in weights")
        return self

    @property
    def names(self) -> list[str]:
        """The accepted type names, sorted."""
        return sorted(self.weights)

    def weight(self, event_type: str) -> float:
        """The signed popularity weight of ``event_type`` (0 for unknown types)."""
        weight = float(self.weights.get(event_type, 0.0))
        return -weight if event_type in self.negative else weight

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data that :meth:`from_dict` turns back into an equal object."""
        data = self.model_dump(mode="json")
        data["negative"] = sorted(self.negative)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventTypes:
        """Builds the configuration from :meth:`to_dict` output (or hand-written JSON/TOML).

        Raises:
            pydantic.ValidationError: (a ``ValueError``) naming the offending field.
        """
        return cls.model_validate(dict(data))


@dataclass(frozen=True)
class EventBounds:
    """What an event may plausibly say; rows outside are refused with a reason, never stored.

    ``vecrank ingest events`` and ``POST /events`` apply the same bounds (:func:`parse_event`).

    Args:
        min_timestamp_ms: the earliest instant, epoch milliseconds (default 1970-01-01T00:00Z).
        max_future_s: how far past the present an event may lie (default one day: clocks drift,
            time zones get mislabelled; a year-9999 timestamp is a bug, not a plan).
        rating_range: the smallest and largest rating (the ``value`` of the rating type), both
            included; the default 0 to 10 holds 0.5..5 stars and 1..10 scores.

    Example:
        >>> EventBounds.from_dict(EventBounds(rating_range=(1, 5)).to_dict()) == EventBounds(rating_range=(1.0, 5.0))
        True
    """

    min_timestamp_ms: int = 0
    max_future_s: float = 86_400.0
    rating_range: tuple[float, float] = (0.0, 10.0)

    def __post_init__(self) -> None:
        low, high = self.rating_range
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"rating_range must be two finite numbers, the smaller first, not {self.rating_range!r}")
        if not math.isfinite(self.max_future_s) or self.max_future_s < 0:
            raise ValueError(f"max_future_s must be a finite number >= 0, not {self.max_future_s!r}")
        if not _MIN_MS <= self.min_timestamp_ms <= _MAX_MS:
            raise ValueError(f"min_timestamp_ms must lie in the years 1 to 9999, not {self.min_timestamp_ms!r}")
        object.__setattr__(self, "rating_range", (float(low), float(high)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_timestamp_ms": self.min_timestamp_ms,
            "max_future_s": self.max_future_s,
            "rating_range": list(self.rating_range),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventBounds:
        data = dict(data)
        if "rating_range" in data:
            data["rating_range"] = tuple(data["rating_range"])
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Instants
# --------------------------------------------------------------------------------------------


def parse_timestamp(value: Any) -> int:
    """The instant ``value`` names, in epoch milliseconds (UTC).

    Accepts ISO 8601 text (``2024-06-01``, ``2024-06-01T12:00:00Z``, with any UTC offset; no
    offset means UTC) and epoch numbers or numeric text: below 1e11 they are seconds (fractions
    allowed), otherwise milliseconds.

    Args:
        value: The raw timestamp from the input row.

    Returns:
        Epoch milliseconds.

    Raises:
        ValueError: The value is empty, not a number or ISO 8601 date, or not finite.

    Example:
        >>> parse_timestamp("1970-01-01T00:00:01Z"), parse_timestamp(1), parse_timestamp("1000")
        (1000, 1000, 1000000)
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty timestamp")
        if NUMBER.fullmatch(text):
            return _epoch_number(float(text) if any(c in text for c in ".eE") else int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither ISO 8601 nor epoch seconds/milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # Integer arithmetic on timedeltas: float timestamps would round some milliseconds.
        return (moment - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, (int, float)):
        return _epoch_number(value)
    raise ValueError(f"expected ISO 8601 text or an epoch number, got {type(value).__name__}")


def _epoch_number(number: int | float) -> int:
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{number!r} is not a timestamp")
    if abs(number) < _SECONDS_LIMIT:
        millis = round(number * 1000) if isinstance(number, float) else number * 1000
    else:
        millis = round(number)
    # Checked here rather than left to Elasticsearch, so the row is reported as a bad timestamp.
    if not _MIN_MS <= millis <= _MAX_MS:
        raise ValueError(f"{number!r} is outside the years 1 to 9999")
    return millis


def ms_to_datetime(millis: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=millis)
