"""The request and response bodies of the HTTP API (pydantic models, hence the OpenAPI spec), and
the id rules they apply."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)

from vecrank.ingest.events import MAX_ID_BYTES, EventTypes
from vecrank.ingest.records import normalise_id

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool


def id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a user or item id (empty, over :data:`MAX_ID_BYTES` in UTF-8), else None.

    Example:
        >>> id_problem("42") is None, id_problem("\U0001f600" * 129)
        (True, 'the id is 516 bytes in UTF-8; at most 512')
    """
    if not text.strip():
        return "the id is empty"
    size = len(text.encode("utf-8"))
    return f"the id is {size} bytes in UTF-8; at most {MAX_ID_BYTES}" if size > MAX_ID_BYTES else None


def _check_id(text: str) -> str:
    problem = id_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


#: A user or item id: 1 to 512 UTF-8 bytes (Elasticsearch's limit on document ids).
Id = Annotated[str, Field(min_length=1), AfterValidator(_check_id)]


def _number_as_id(value: Any) -> Any:
    """A JSON number as ingest's id rule writes it (``12.0`` -> ``"12"``); anything else as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text, _ = normalise_id(value)
        return text if text is not None else value
    return value


#: An event's user or item: an id, or a number that ingest's rule turns into one, so that 12,
#: 12.0 and " 12" name the same user in a file and on ``POST /events``.
EventId = Annotated[str, BeforeValidator(_number_as_id), Field(min_length=1), AfterValidator(_check_id)]


class RangeFilter(BaseModel):
    """A range on a numeric or date field; at least one bound."""

    model_config = ConfigDict(extra="forbid")
    gte: Scalar | None = None
    gt: Scalar | None = None
    lte: Scalar | None = None
    lt: Scalar | None = None

    def to_filter(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


FilterValue = Scalar | Annotated[list[Scalar], Field(min_length=1, max_length=100)] | RangeFilter


class RecommendRequest(BaseModel):
    """What ``POST /recommendations`` takes."""

    model_config = ConfigDict(
        extra="forbid",
        coerce_numbers_to_str=True,
        json_schema_extra={
            "examples": [
                {
                    "user": "42",
                    "query": "space adventure",
                    "k": 10,
                    "filters": {"genres": ["Comedy", "Drama"], "year": {"gte": 1990}},
                }
            ]
        },
    )
    user: Id | None = None
    query: Annotated[str, Field(max_length=1000)] | None = None
    filters: Annotated[dict[str, FilterValue], Field(max_length=32)] = Field(default_factory=dict)
    k: StrictInt = 10
    context_items: Annotated[list[Id], Field(max_length=50)] = Field(default_factory=list)
    reasons: StrictBool = Field(
        False,
        description="each item the model ranked gets its top reasons " "(ranks in Python, where the contributions are)",
    )


class ItemReason(BaseModel):
    code: str = Field(description="liked, taste, trending, popular, rated or query")
    text: str = Field(description="for people, e.g. 'because you liked Alien', 'popular this week'")


class RecommendedItem(BaseModel):
    item_id: str
    position: int
    score: float | None = Field(None, description="the model's score; absent where nothing ranked the request")
    fields: dict[str, Any]
    team: str | None = Field(None, description="interleaving: the arm whose ranking contributed this item")
    model_version: str | None = Field(None, description="interleaving: the model version of the item's team")
    reasons: list[ItemReason] | None = Field(
        None, description="with reasons=true, where the model ranked the item: " "its top reasons, strongest first"
    )


class RecommendResponse(BaseModel):
    request_id: str
    experiment: str | None
    arm: str | None = Field(description="the user's arm, 'holdout', 'interleaved', or null outside experiments")
    model_version: str = Field(description="the model this request's engine serves, 'none' without one")
    ranked_by: str | None = Field(
        description="the model version(s) that ordered the items; null: retrieval order "
        "(a path the model was not trained for), and no scores"
    )
    path: str
    cold_start: bool
    items: list[RecommendedItem]
    timings_ms: dict[str, float]


class EventIn(BaseModel):
    """One event. ``timestamp``: ISO 8601 or epoch seconds/milliseconds, from 1970 to one day
    ahead (``ServeConfig.event_bounds``); without one, the time the service received it (then a
    retry is a new event). A rating's ``value`` lies in 0 to 10 by default."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    user: EventId
    item: EventId
    type: Annotated[str, Field(min_length=1, max_length=64)]
    timestamp: StrictInt | StrictFloat | Annotated[str, Field(max_length=64)] | None = None
    value: StrictInt | StrictFloat | None = None
    request_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    position: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = None


class EventsRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"events": [{"user": "42", "item": "318", "type": "click", "request_id": "…"}]}]
        },
    )
    events: Annotated[list[EventIn], Field(min_length=1)]


def events_request_model(event_types: EventTypes) -> type[EventsRequest]:
    """The ``POST /events`` body of a service accepting ``event_types``: :class:`EventsRequest`
    whose ``type`` lists those names in the OpenAPI spec (``enum``).

    The spec only describes them: :func:`vecrank.ingest.events.parse_event` decides, as it does for
    ``vecrank ingest events``, so an event of another type is rejected on its own (``rejected``,
    reason "unknown event type") and the batch's other events are stored.
    """
    names = event_types.names
    enum: list[JsonValue] = list(names)
    described = Field(
        min_length=1,
        max_length=64,
        description=f"one of the event types this service accepts: {', '.join(names)}",
        json_schema_extra={"enum": enum},
    )

    event = create_model("EventIn", __base__=EventIn, __doc__=EventIn.__doc__, type=(str, described))
    return create_model(
        "EventsRequest",
        __base__=EventsRequest,
        __doc__=EventsRequest.__doc__,
        # `event` is a class made just above, which a static checker cannot take as a type; pydantic
        # reads the annotation at runtime.
        events=(list[event], Field(min_length=1)),  # type: ignore[valid-type]
    )


class EventsResponse(BaseModel):
    request_id: str
    accepted: int
    duplicates: int
    attributed: int
    rejected: list[dict[str, Any]]
    warnings: list[str]


class ErrorResponse(BaseModel):
    error: dict[str, Any]
    request_id: str
