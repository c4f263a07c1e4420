"""The event model: one frozen pydantic model per event kind, joined in a union.

Every provider format (Chat Completions chunks, Responses API events,
recordings) is normalized into these events, so operators and sinks never look
at a provider's raw shape.

Every event carries:

* ``stream_id`` -- the id of the stream it belongs to;
* ``seq`` -- its sequence number: 0 for ``started``, rising by one per event;
* ``t`` -- seconds since the stream started (the time of arrival upstream);
* ``choice`` -- the choice index (``n`` > 1 interleaves several choices).

Every stream ends with exactly one terminal event: :class:`Finished`,
:class:`StreamError` or :class:`Cancelled`.

Kinds::

    started                       Started
    text | reasoning | refusal    TextDelta | ReasoningDelta | RefusalDelta
    tool_call.started             ToolCallStarted
    tool_call.delta               ToolCallDelta      (partial parse so far, if assembled)
    tool_call.completed           ToolCallCompleted  (parsed arguments)
    tool_call.invalid             ToolCallInvalid    (raw arguments kept, the error said)
    usage                         UsageReport
    choice.finished               ChoiceFinished     (a choice's finish reason)
    failover                      Failover           (an attempt failed; the next one is made:
                                                      not terminal; after_first_token: joined)
    block.started                 BlockStarted       (a content block begins: its kind, as the
                                                      provider started it; keeps block order)
    block.delta                   BlockDelta         (a delta of a block no other event carries:
                                                      server tool input..., as the provider sent it)
    reasoning.signature           ReasoningSignature (the provider's signature of the reasoning)
    citation                      Citation           (a citation of the text being written)
    stop_reason                   StopReason         (the provider's own stop reason and sequence)
    finished | error | cancelled  Finished | StreamError | Cancelled   (terminal)
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "TERMINAL_TYPES",
    "BlockDelta",
    "BlockStarted",
    "Cancelled",
    "ChoiceFinished",
    "Citation",
    "ErrorKind",
    "Event",
    "EventBase",
    "Failover",
    "Finished",
    "ReasoningDelta",
    "ReasoningSignature",
    "RefusalDelta",
    "Started",
    "StopReason",
    "StreamError",
    "TextDelta",
    "ToolCallCompleted",
    "ToolCallDelta",
    "ToolCallInvalid",
    "ToolCallStarted",
    "UsageReport",
    "dump_event",
    "event_json",
    "is_content",
    "is_terminal",
    "load_event",
]


class EventBase(BaseModel):
    """Fields shared by every event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_id: str
    seq: int
    t: float = 0.0
    choice: int = 0

    ends_stream: ClassVar[bool] = False
    """Whether an event of this kind is terminal: :func:`is_terminal` as an attribute
    (read on every event by the operators and sinks; a subclass inherits it)."""


class Started(EventBase):
    """The stream has started: the upstream answered (or the replay began)."""

    type: Literal["started"] = "started"
    api: Literal["chat", "responses", "anthropic", "unknown"] = "unknown"
    model: str | None = None
    response_id: str | None = None
    usage: dict[str, Any] | None = None  # usage said at the start (Anthropic's message_start)


class TextDelta(EventBase):
    """A piece of the answer's text (``delta.content``)."""

    type: Literal["text"] = "text"
    text: str


class ReasoningDelta(EventBase):
    """A piece of reasoning text (``reasoning``, ``reasoning_content``, summaries)."""

    type: Literal["reasoning"] = "reasoning"
    text: str


class RefusalDelta(EventBase):
    """A piece of a refusal (``delta.refusal``)."""

    type: Literal["refusal"] = "refusal"
    text: str


class ToolCallStarted(EventBase):
    """A tool call has appeared; ``index`` orders the calls of one choice."""

    type: Literal["tool_call.started"] = "tool_call.started"
    index: int
    id: str | None = None
    name: str | None = None


class ToolCallDelta(EventBase):
    """A fragment of a tool call's JSON arguments.

    ``partial`` is the parse of all arguments so far (missing closers
    tolerated); it is ``None`` until the tool-call assembler fills it in.
    """

    type: Literal["tool_call.delta"] = "tool_call.delta"
    index: int
    arguments: str
    partial: Any = None


class ToolCallCompleted(EventBase):
    """A tool call's arguments are complete and parse (and validate, if asked)."""

    type: Literal["tool_call.completed"] = "tool_call.completed"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str
    parsed: Any = None


class ToolCallInvalid(EventBase):
    """A tool call's arguments do not parse or validate: the raw text is kept."""

    type: Literal["tool_call.invalid"] = "tool_call.invalid"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str
    error: str


class UsageReport(EventBase):
    """Token usage as the provider reported it (its own field names kept)."""

    type: Literal["usage"] = "usage"
    usage: dict[str, Any]


class ChoiceFinished(EventBase):
    """A choice has finished, with the provider's finish reason (not terminal)."""

    type: Literal["choice.finished"] = "choice.finished"
    finish_reason: str | None


class BlockStarted(EventBase):
    """A content block of the answer begins (Anthropic content blocks).

    ``index`` is its position in the provider's message; ``kind`` is
    ``text``, ``reasoning`` or ``tool_call`` for the blocks whose content the
    other events carry, else the provider's block type (``redacted_thinking``,
    ``server_tool_use``, ``web_search_tool_result``...). ``block`` is the block
    as the provider started it, with the content other events carry emptied
    (text, thinking, signature, input), so a client gets it back as it was.
    Not content: the deltas that follow are.
    """

    type: Literal["block.started"] = "block.started"
    index: int
    kind: str
    block: dict[str, Any] | None = None


class BlockDelta(EventBase):
    """A delta of a block no other event carries (a server tool's input...), as sent."""

    type: Literal["block.delta"] = "block.delta"
    index: int
    delta: dict[str, Any]


class ReasoningSignature(EventBase):
    """The provider's signature of the reasoning block ``index`` (sent back to continue)."""

    type: Literal["reasoning.signature"] = "reasoning.signature"
    index: int = 0
    signature: str


class Citation(EventBase):
    """A citation of the text block ``index``, in the provider's own shape."""

    type: Literal["citation"] = "citation"
    index: int = 0
    citation: dict[str, Any]


class StopReason(EventBase):
    """The provider's own stop reason (``end_turn``, ``stop_sequence``, ``pause_turn``...).

    ``choice.finished`` says it in Chat Completions words; this keeps the
    original, the stop ``sequence`` that matched, and any other ``details``
    the provider gave with it. Not terminal.
    """

    type: Literal["stop_reason"] = "stop_reason"
    reason: str
    sequence: str | None = None
    details: dict[str, Any] | None = None


class Finished(EventBase):
    """Terminal: the stream ended normally. ``finish_reason`` is choice 0's."""

    ends_stream: ClassVar[bool] = True

    type: Literal["finished"] = "finished"
    finish_reason: str | None = None


ErrorKind = Literal[
    "http",  # the upstream answered with an HTTP error status
    "connection",  # the connection failed or was lost
    "timeout",  # a timeout expired
    "upstream",  # the upstream sent an error payload in the stream
    "malformed",  # a chunk could not be understood
    "internal",  # a bug or an unexpected exception in the pipeline
]


class StreamError(EventBase):
    """Terminal: the stream failed.

    ``after_first_token`` says whether any content had already been sent, in
    which case the stream cannot be retried transparently.
    """

    ends_stream: ClassVar[bool] = True

    type: Literal["error"] = "error"
    kind: ErrorKind
    message: str
    status: int | None = None
    code: str | None = None
    retryable: bool = False
    after_first_token: bool = False
    retry_after: float | None = None  # seconds, from the upstream's Retry-After headers


class Failover(EventBase):
    """An attempt failed; another is made (not terminal).

    Before the first token (``after_first_token`` false) the failed attempt's
    own events are never sent. After it (continuation, opt-in: see
    :mod:`pipeline.runtime.continuation`), what was sent stays and the next
    attempt's answer joins it at ``offset``, the number of characters of text
    (choice 0) sent before this event.
    ``to_upstream`` is ``from_upstream`` for a retry of the same upstream.
    ``attempt`` numbers the attempt about to be made (the first one is 1),
    ``delay`` the seconds waited before it; ``reason`` is the failed
    attempt's (scrubbed) error message, ``kind`` and ``status`` its kind and
    HTTP status.
    """

    type: Literal["failover"] = "failover"
    from_upstream: str
    to_upstream: str
    attempt: int
    reason: str
    kind: ErrorKind | None = None
    status: int | None = None
    delay: float = 0.0
    after_first_token: bool = False
    offset: int | None = None


class Cancelled(EventBase):
    """Terminal: the stream was cancelled (client gone, dispose, timeout)."""

    ends_stream: ClassVar[bool] = True

    type: Literal["cancelled"] = "cancelled"
    reason: str = "cancelled"


Event: TypeAlias = Annotated[
    Started
    | TextDelta
    | ReasoningDelta
    | RefusalDelta
    | ToolCallStarted
    | ToolCallDelta
    | ToolCallCompleted
    | ToolCallInvalid
    | UsageReport
    | ChoiceFinished
    | Failover
    | BlockStarted
    | BlockDelta
    | ReasoningSignature
    | Citation
    | StopReason
    | Finished
    | StreamError
    | Cancelled,
    Field(discriminator="type"),
]

TERMINAL_TYPES: frozenset[str] = frozenset({"finished", "error", "cancelled"})

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


_TEXT_CLASSES = (TextDelta, ReasoningDelta, RefusalDelta)
_TOOL_CLASSES = (ToolCallStarted, ToolCallDelta, BlockDelta)
# Blocks whose content arrives as text, reasoning or tool-call events: their start is not content.
_EVENT_BLOCK_KINDS = frozenset({"text", "reasoning", "tool_call"})
_TERMINAL_CLASSES = (Finished, StreamError, Cancelled)
_ALL_CLASSES = (
    Started,
    *_TEXT_CLASSES,
    *_TOOL_CLASSES,
    ToolCallCompleted,
    ToolCallInvalid,
    UsageReport,
    ChoiceFinished,
    Failover,
    BlockStarted,
    ReasoningSignature,
    Citation,
    StopReason,
    *_TERMINAL_CLASSES,
)
# Answers for the exact classes, looked up by type (these run on every event);
# anything else (a subclass) falls back to isinstance.
_CONTENT_BY_CLASS: dict[type, int] = {
    cls: 1 if cls in _TEXT_CLASSES else 2 if cls in _TOOL_CLASSES else 0 for cls in _ALL_CLASSES
}
_CONTENT_BY_CLASS[BlockStarted] = 3


def is_content(event: EventBase) -> bool:
    """Return whether ``event`` carries content: a token has been sent once one did.

    Non-empty text, reasoning and refusal deltas, tool-call starts and deltas,
    and the blocks no other event carries (their start and their deltas:
    redacted reasoning, a server tool's call and result...).
    """
    kind = _CONTENT_BY_CLASS.get(type(event))
    if kind is None:
        kind = (
            1 if isinstance(event, _TEXT_CLASSES) else 2 if isinstance(event, _TOOL_CLASSES) else 0
        )
    if kind == 1:
        return bool(event.text)  # type: ignore[attr-defined]
    if kind == 3:
        return event.kind not in _EVENT_BLOCK_KINDS  # type: ignore[attr-defined]
    return kind == 2


def is_terminal(event: EventBase) -> bool:
    """Return whether ``event`` ends its stream (its class's :attr:`EventBase.ends_stream`)."""
    terminal: bool = getattr(event, "ends_stream", False)  # a value that is not an event: no
    return terminal


# The last event serialized and its JSON: the sinks of one emit (the hub's replay
# buffer, the store, the Redis bus) ask for the same event in turn, so it is made once.
# One tuple, replaced whole: a reader never sees one event's object with another's JSON.
_last_json: tuple[EventBase | None, bytes] = (None, b"")


def event_json(event: EventBase) -> bytes:
    """An event as one line of JSON bytes (its ``type`` included): ``model_dump_json``'s
    output, through the model's serializer directly (half the cost, on every event).

    The last event's JSON is kept: asked again for the same (frozen) event
    object, it is returned without serializing again.
    """
    global _last_json
    last = _last_json
    if last[0] is event:
        return last[1]
    data = event.__pydantic_serializer__.to_json(event)
    _last_json = (event, data)
    return data


def dump_event(event: EventBase) -> str:
    """Serialize an event to one line of JSON (its ``type`` included)."""
    return event_json(event).decode()


def load_event(data: str | bytes | dict[str, Any]) -> Event:
    """Parse an event from JSON text or a dict; raises ``pydantic.ValidationError``."""
    if isinstance(data, dict):
        return _ADAPTER.validate_python(data)
    return _ADAPTER.validate_json(data)
