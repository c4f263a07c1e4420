"""Tests of :mod:`operators.assemble_tool_calls`."""

from __future__ import annotations

import importlib
import itertools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import jiter
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import BaseModel, field_validator
from reactivex import Observable
from reactivex.notification import OnNext
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from operators._stamp import Stamper
from operators.assemble_tool_calls import assemble_tool_calls
from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    Event,
    Finished,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
)

# The module, not the function of the same name (a package re-export may shadow it).
MOD = importlib.import_module("operators.assemble_tool_calls")
REAL_PARSE = MOD._parse_partial


class Stream:
    """Builds a normalized event stream with contiguous seqs, as ``extract_deltas`` would."""

    def __init__(self) -> None:
        self.stamp = Stamper("s")
        self.t = 0.0
        self.events: list[Event] = [self.stamp(Started, 0, self._tick(), api="chat")]

    def _tick(self) -> float:
        self.t += 0.5
        return self.t

    def start(
        self, index: int, id: str | None = "call", name: str | None = "f", choice: int = 0
    ) -> Stream:
        self.events.append(
            self.stamp(ToolCallStarted, choice, self._tick(), index=index, id=id, name=name)
        )
        return self

    def delta(self, index: int, arguments: str, choice: int = 0) -> Stream:
        self.events.append(
            self.stamp(ToolCallDelta, choice, self._tick(), index=index, arguments=arguments)
        )
        return self

    def text(self, text: str, choice: int = 0) -> Stream:
        self.events.append(self.stamp(TextDelta, choice, self._tick(), text=text))
        return self

    def finish(self, choice: int = 0, reason: str = "tool_calls") -> Stream:
        self.events.append(self.stamp(ChoiceFinished, choice, self._tick(), finish_reason=reason))
        return self

    def end(self, how: str = "finished") -> list[Event]:
        t = self._tick()
        if how == "finished":
            self.events.append(self.stamp(Finished, 0, t, finish_reason="tool_calls"))
        elif how == "error":
            self.events.append(self.stamp(StreamError, 0, t, kind="connection", message="lost"))
        elif how == "cancelled":
            self.events.append(self.stamp(Cancelled, 0, t, reason="client gone"))
        return self.events


def call(arguments: Sequence[str], name: str = "f", id: str = "call") -> list[Event]:
    """One call with the given fragments, its choice finished, the stream finished."""
    s = Stream().start(0, id=id, name=name)
    for fragment in arguments:
        s.delta(0, fragment)
    return s.finish().end()


def collect(
    source: Observable[Event], operator: Callable[[Observable[Event]], Observable[Event]]
) -> tuple[list[Event], list[Exception], bool]:
    out: list[Event] = []
    errors: list[Exception] = []
    done: list[bool] = []
    source.pipe(operator).subscribe(out.append, errors.append, lambda: done.append(True))
    return out, errors, bool(done)


def run(events: list[Event], *args: Any, **kwargs: Any) -> list[Event]:
    out, errors, done = collect(
        reactivex.from_iterable(events), assemble_tool_calls(*args, **kwargs)
    )
    assert errors == []
    assert done
    assert [e.seq for e in out] == list(range(len(out))), "seqs are not contiguous"
    return out


def verdicts(out: list[Event]) -> list[ToolCallCompleted | ToolCallInvalid]:
    return [e for e in out if isinstance(e, ToolCallCompleted | ToolCallInvalid)]


def only(out: list[Event]) -> ToolCallCompleted | ToolCallInvalid:
    [verdict] = verdicts(out)
    return verdict


def completed(out: list[Event]) -> list[ToolCallCompleted]:
    """The verdicts, all of which must be ``completed``."""
    done = [v for v in verdicts(out) if isinstance(v, ToolCallCompleted)]
    assert done == verdicts(out), "some call is invalid"
    return done


def partials(out: list[Event]) -> list[Any]:
    return [e.partial for e in out if isinstance(e, ToolCallDelta)]


def without(out: list[Event], *kinds: type[Event]) -> list[Event]:
    return [e for e in out if not isinstance(e, kinds)]


def strip_seq(events: list[Event]) -> list[dict[str, Any]]:
    return [e.model_dump(exclude={"seq", "partial"}) for e in events]


# -- pass-through ---------------------------------------------------------------------------


def test_no_tool_calls_passes_the_same_objects() -> None:
    events = Stream().text("Hel").text("lo").finish(reason="stop").end()
    out = run(events)
    assert len(out) == len(events)
    assert all(a is b for a, b in zip(out, events, strict=True))


def test_every_event_passes_through_in_order() -> None:
    events = Stream().text("x").start(0).delta(0, "{}").text("y").finish().end()
    out = run(events)
    assert strip_seq(without(out, ToolCallCompleted)) == strip_seq(events)


# -- single, parallel, interleaved -------------------------------------------------------------


def test_single_call_is_completed_just_before_its_choice_finishes() -> None:
    out = run(call(['{"city": "Par', 'is", "days"', ": 3}"], name="weather", id="call_1"))
    assert [e.type for e in out] == [
        "started",
        "tool_call.started",
        "tool_call.delta",
        "tool_call.delta",
        "tool_call.delta",
        "tool_call.completed",
        "choice.finished",
        "finished",
    ]
    assert partials(out) == [{"city": "Par"}, {"city": "Paris"}, {"city": "Paris", "days": 3}]
    done = out[5]
    assert isinstance(done, ToolCallCompleted)
    assert (done.index, done.id, done.name, done.choice) == (0, "call_1", "weather", 0)
    assert done.arguments == '{"city": "Paris", "days": 3}'
    assert done.parsed == {"city": "Paris", "days": 3}
    assert done.stream_id == "s"
    assert done.t == out[6].t  # stamped like the choice.finished it precedes


def test_parallel_calls_close_in_index_order() -> None:
    events = (
        Stream()
        .start(1, id="b", name="g")
        .start(0, id="a", name="f")
        .delta(1, '{"y": ')
        .delta(0, '{"x": ')
        .delta(0, "1}")
        .delta(1, "2}")
        .finish()
        .end()
    )
    out = run(events)
    assert [(v.index, v.id, v.name, v.parsed) for v in completed(out)] == [
        (0, "a", "f", {"x": 1}),
        (1, "b", "g", {"y": 2}),
    ]
    assert [e.partial for e in out if isinstance(e, ToolCallDelta)] == [
        {},
        {},
        {"x": 1},
        {"y": 2},
    ]
    assert [e.type for e in out[-4:]] == [
        "tool_call.completed",
        "tool_call.completed",
        "choice.finished",
        "finished",
    ]


def test_interleaved_choices_close_separately() -> None:
    events = (
        Stream()
        .start(0, id="a", choice=0)
        .start(0, id="b", choice=1)
        .delta(0, '{"c": 0', choice=0)
        .delta(0, '{"c": 1}', choice=1)
        .finish(choice=1)
        .delta(0, "}", choice=0)
        .finish(choice=0)
        .end()
    )
    out = run(events)
    kinds = [(e.type, e.choice) for e in out if e.type not in ("tool_call.delta",)]
    assert kinds == [
        ("started", 0),
        ("tool_call.started", 0),
        ("tool_call.started", 1),
        ("tool_call.completed", 1),
        ("choice.finished", 1),
        ("tool_call.completed", 0),
        ("choice.finished", 0),
        ("finished", 0),
    ]
    assert [(v.choice, v.id, v.parsed) for v in completed(out)] == [
        (1, "b", {"c": 1}),
        (0, "a", {"c": 0}),
    ]


def test_missing_started_event_or_name_keeps_what_is_known() -> None:
    events = Stream().start(0, id=None, name="f").delta(0, "{}").delta(1, '{"a": 1}').end()
    out = run(events)
    assert [(v.index, v.id, v.name, v.parsed) for v in completed(out)] == [
        (0, None, "f", {}),
        (1, None, None, {"a": 1}),
    ]


def test_state_is_per_subscription() -> None:
    source = reactivex.from_iterable(call(['{"a"', ": 1}"]))
    pipeline = source.pipe(assemble_tool_calls())
    first: list[Event] = []
    second: list[Event] = []
    pipeline.subscribe(first.append)
    pipeline.subscribe(second.append)
    assert first == second
    assert len(verdicts(first)) == 1


def test_virtual_time_verdicts_go_out_with_the_choice_finished() -> None:
    scheduler = TestScheduler()
    events = call(['{"a": ', "1}"])
    xs = scheduler.create_cold_observable(
        *[ReactiveTest.on_next(210 + 10 * i, e) for i, e in enumerate(events)],
        ReactiveTest.on_completed(300),
    )
    results = scheduler.start(lambda: xs.pipe(assemble_tool_calls()))
    times = [(m.time, m.value.value.type) for m in results.messages if isinstance(m.value, OnNext)]
    assert times[-3:] == [
        (450, "tool_call.completed"),
        (450, "choice.finished"),
        (460, "finished"),
    ]


# -- fragments split anywhere, partial parse -------------------------------------------------

TRICKY: dict[str, Any] = {
    "q": 'say "hi"\\now\n\ttab',
    "e": "café 😀 ü\u2028",
    "n": [0, -12, 3.5, -2.5e-3, 10**20, True, False, None],
    "o": {"k": {"": []}},
}
TRICKY_TEXTS = [json.dumps(TRICKY), json.dumps(TRICKY, ensure_ascii=False)]


def is_prefix_value(part: Any, full: Any) -> bool:
    """Whether ``part`` could be the partial parse of a prefix of ``full``'s JSON."""
    if isinstance(full, dict):
        return isinstance(part, dict) and all(
            k in full and is_prefix_value(v, full[k]) for k, v in part.items()
        )
    if isinstance(full, list):
        return (
            isinstance(part, list)
            and len(part) <= len(full)
            and all(is_prefix_value(p, f) for p, f in zip(part, full, strict=False))
        )
    if isinstance(full, str):
        return isinstance(part, str) and full.startswith(part)
    if isinstance(full, bool) or full is None:
        return bool(part == full)
    return isinstance(part, int | float) and not isinstance(part, bool)  # a number, maybe cut


@pytest.mark.parametrize("text", TRICKY_TEXTS, ids=["ascii", "utf8"])
def test_split_in_two_at_every_position(text: str) -> None:
    for i in range(len(text) + 1):
        out = run(call([text[:i], text[i:]]))
        done = only(out)
        assert isinstance(done, ToolCallCompleted), i
        assert done.arguments == text
        assert done.parsed == TRICKY
        first, second = partials(out)
        assert first is None or is_prefix_value(first, TRICKY), (i, first)
        assert second == TRICKY


@pytest.mark.parametrize("text", TRICKY_TEXTS, ids=["ascii", "utf8"])
def test_one_character_fragments_give_growing_partials(text: str) -> None:
    out = run(call(list(text)))
    parts = partials(out)
    assert len(parts) == len(text)
    for i, part in enumerate(parts):
        # Not monotone: a number cut at "-0." disappears until its next digit.
        assert is_prefix_value(part, TRICKY), (i, text[: i + 1], part)
    assert parts[-1] == TRICKY
    assert completed(out)[0].parsed == TRICKY


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ('{"s": "a\\u00', {"s": "a"}),  # mid-escape
        ('{"s": "a\\u00e9', {"s": "aé"}),
        ('{"s": "a\\ud83d', {"s": "a"}),  # half a surrogate pair
        ('{"s": "a\\ud83d\\ude', {"s": "a"}),
        ('{"s": "a\\ud83d\\ude00', {"s": "a😀"}),
        ('{"s": "a\\"', {"s": 'a"'}),
        ('{"s": "a\\', {"s": "a"}),
        ('{"s": "a\\n', {"s": "a\n"}),
        ('{"s": "a", "n": -1', {"s": "a", "n": -1}),
        ('{"s": "a", "n', {"s": "a"}),  # mid-key
        ('{"s": "a", "n": [tr', {"s": "a", "n": []}),
        ("", None),
    ],
)
def test_partial_at_a_cut(cut: str, expected: Any) -> None:
    assert partials(run(call([cut]))) == [expected]


def test_surrogate_pair_split_by_the_chunk_decoder_is_joined() -> None:
    # Chunks decoded by Python's json can carry each half of a pair in its own str.
    out = run(call(['{"s": "\ud83d', '\ude00"}']))
    assert partials(out) == [{"s": ""}, {"s": "😀"}]
    done = only(out)
    assert isinstance(done, ToolCallCompleted)
    assert done.arguments == '{"s": "😀"}'
    assert done.parsed == {"s": "😀"}


def test_partial_false_leaves_deltas_alone() -> None:
    events = call(['{"a"', ": 1}"])
    out = run(events, partial=False)
    assert partials(out) == [None, None]
    assert out[2] is events[2]
    assert completed(out)[0].parsed == {"a": 1}


# -- invalid arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragments", "message"),
    [
        (['{"a": 1,', ",}"], "arguments are not valid JSON: "),
        (['{"a": 1}', '{"b": 2}'], "trailing characters at line 1 column 9"),
        (['{"a": NaN}'], "arguments are not valid JSON"),
        (['{"a": 1'], "EOF while parsing an object at line 1 column 7"),
    ],
)
def test_invalid_json_is_an_event_keeping_the_raw_text(fragments: list[str], message: str) -> None:
    out = run(call(fragments))
    bad = only(out)
    assert isinstance(bad, ToolCallInvalid)
    assert bad.arguments == "".join(fragments)
    assert message in bad.error
    assert "line 1 column" in bad.error
    assert out[-2].type == "choice.finished"


def test_invalid_prefix_keeps_the_last_good_partial() -> None:
    out = run(call(['{"a": 1', ", x", ', "b": 2}']))
    assert partials(out) == [{"a": 1}, {"a": 1}, {"a": 1}]
    assert isinstance(only(out), ToolCallInvalid)


@pytest.mark.parametrize("raw", ["", "  \n"])
def test_empty_arguments_mean_an_empty_object(raw: str) -> None:
    events = Stream().start(0).finish().end() if raw == "" else call([raw])
    done = only(run(events))
    assert isinstance(done, ToolCallCompleted)
    assert done.parsed == {}
    assert done.arguments == raw


# -- terminal events -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "said"), [("error", "the stream failed"), ("cancelled", "the stream was cancelled")]
)
def test_calls_open_at_a_failed_end_are_closed_before_it(how: str, said: str) -> None:
    events = Stream().start(0, id="a").start(1, id="b").delta(0, '{"x": 1}').delta(1, '{"y": [1')
    out = run(events.end(how))
    good, bad = verdicts(out)
    assert isinstance(good, ToolCallCompleted)
    assert good.parsed == {"x": 1}
    assert isinstance(bad, ToolCallInvalid)
    assert bad.arguments == '{"y": [1'
    assert bad.error.startswith(f"{said} before the arguments were complete (EOF")
    assert out[-1].type == how
    assert out[-3:-1] == [good, bad]


def test_calls_open_at_finished_are_judged_normally() -> None:
    out = run(Stream().start(0).delta(0, '{"x": ').end())
    bad = only(out)
    assert isinstance(bad, ToolCallInvalid)
    assert bad.error.startswith("arguments are not valid JSON: EOF")
    assert [e.type for e in out[-2:]] == ["tool_call.invalid", "finished"]


def test_upstream_error_closes_open_calls_then_passes_on() -> None:
    subject: Subject[Event] = Subject()
    out: list[Event] = []
    errors: list[Exception] = []
    subject.pipe(assemble_tool_calls()).subscribe(out.append, errors.append)
    for event in Stream().start(0).delta(0, '{"x": "ab').events:
        subject.on_next(event)
    boom = RuntimeError("connection lost")
    subject.on_error(boom)
    assert errors == [boom]
    bad = out[-1]
    assert isinstance(bad, ToolCallInvalid)
    assert bad.seq == 3
    assert bad.error.startswith("the stream failed before the arguments were complete")


def test_completion_without_a_terminal_event_closes_open_calls() -> None:
    events = Stream().start(0).delta(0, "{}").events
    out = run(events)
    assert out[-1].type == "tool_call.completed"
    assert out[-1].seq == 3


# -- sequence numbers ------------------------------------------------------------------------


def test_events_after_inserted_ones_are_renumbered() -> None:
    events = (
        Stream()
        .start(0, choice=0)
        .start(0, choice=1)
        .delta(0, "{}", choice=1)
        .finish(choice=1)
        .text("after", choice=0)
        .finish(choice=0)
    )
    events.events.append(events.stamp(UsageReport, 0, 9.0, usage={"total_tokens": 3}))
    out = run(events.end())  # run() checks contiguity
    assert len(out) == len(events.events) + 2
    assert out[-1].seq == events.events[-1].seq + 2


# -- validation ------------------------------------------------------------------------------

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
    "additionalProperties": False,
}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "now"}},
]


class Weather(BaseModel):
    city: str
    days: int = 1


@pytest.mark.parametrize(
    "tools",
    [
        OPENAI_TOOLS,
        {"weather": WEATHER},
        [{"type": "function", "name": "weather", "parameters": WEATHER}],
    ],
    ids=["chat-tools", "mapping", "responses-tools"],
)
def test_json_schema_validation(tools: Any) -> None:
    good = only(run(call(['{"city": "Oslo", "days": 2}'], name="weather"), tools))
    assert isinstance(good, ToolCallCompleted)
    assert good.parsed == {"city": "Oslo", "days": 2}
    bad = only(run(call(['{"city": "Oslo", "days": "2"}'], name="weather"), tools))
    assert isinstance(bad, ToolCallInvalid)
    assert bad.error == (
        "arguments do not match the schema of 'weather' at $.days: '2' is not of type 'integer'"
    )
    assert bad.arguments == '{"city": "Oslo", "days": "2"}'
    missing = only(run(call(["{}"], name="weather"), tools))
    assert isinstance(missing, ToolCallInvalid)
    assert "'city' is a required property" in missing.error


def test_tool_without_parameters_takes_an_object() -> None:
    assert isinstance(only(run(call([""], name="now"), OPENAI_TOOLS)), ToolCallCompleted)
    assert isinstance(
        only(run(Stream().start(0, name="now").finish().end(), OPENAI_TOOLS)), ToolCallCompleted
    )
    assert isinstance(only(run(call(["[]"], name="now"), OPENAI_TOOLS)), ToolCallInvalid)


def test_unknown_or_unnamed_tool_is_invalid() -> None:
    bad = only(run(call(["{}"], name="launch"), OPENAI_TOOLS))
    assert isinstance(bad, ToolCallInvalid)
    assert bad.error == "unknown tool 'launch' (known tools: 'weather', 'now')"
    nameless = only(run(Stream().delta(0, "{}").finish().end(), OPENAI_TOOLS))
    assert isinstance(nameless, ToolCallInvalid)
    assert "no name" in nameless.error


def test_pydantic_model_validation() -> None:
    tools = {"weather": Weather, "free": None}
    good = only(run(call(['{"city": "Oslo"}'], name="weather"), tools))
    assert isinstance(good, ToolCallCompleted)
    assert good.parsed == {"city": "Oslo", "days": 1}  # the validated model, dumped
    assert good.arguments == '{"city": "Oslo"}'
    bad = only(run(call(['{"days": "x"}'], name="weather"), tools))
    assert isinstance(bad, ToolCallInvalid)
    assert bad.error.startswith(
        "arguments do not validate against 'weather': $.city: Field required"
    )
    assert "$.days: Input should be a valid integer" in bad.error
    free = only(run(call(["[1]"], name="free"), tools))
    assert isinstance(free, ToolCallCompleted)
    assert free.parsed == [1]


class Exploding(BaseModel):
    a: int

    @field_validator("a")
    @classmethod
    def explode(cls, value: int) -> int:
        raise TypeError("a bug in the validator")


def test_a_validator_crashing_goes_to_on_error() -> None:
    out, errors, done = collect(
        reactivex.from_iterable(call(['{"a": 1}'], name="x")), assemble_tool_calls({"x": Exploding})
    )
    assert [str(e) for e in errors] == ["a bug in the validator"]
    assert not done
    assert verdicts(out) == []


def test_bad_tools_fail_when_the_operator_is_made() -> None:
    # The message says what is wrong and where, without jsonschema's dump of the metaschema.
    with pytest.raises(ValueError, match=r"not a valid JSON schema: .* \(at \$\.type\)") as bad:
        assemble_tool_calls({"f": {"type": "no-such-type"}})
    assert len(str(bad.value)) < 300
    with pytest.raises(TypeError, match="must be a JSON schema dict"):
        assemble_tool_calls({"f": "string"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="has no name"):
        assemble_tool_calls([{"type": "function", "function": {}}])
    with pytest.raises(ValueError, match="growth"):
        assemble_tool_calls(growth=0)


# -- cost: the partial parse is throttled ------------------------------------------------------


def count_parses(monkeypatch: pytest.MonkeyPatch, n: int, size: int = 10) -> tuple[int, int, Any]:
    """Stream ``n`` fragments of ``size`` chars; return (parses, bytes parsed, last partial)."""
    calls = [0, 0]

    def counting(data: bytes) -> Any:
        calls[0] += 1
        calls[1] += len(data)
        return REAL_PARSE(data)

    monkeypatch.setattr(MOD, "_parse_partial", counting)
    fragments = ['{"s": "'] + ["x" * size] * n + ['"}']
    out = run(call(fragments))
    assert completed(out)[0].parsed == {"s": "x" * (size * n)}
    return calls[0], calls[1], partials(out)[-2]


@pytest.mark.slow  # a megabyte of arguments in 100,000 fragments
def test_partial_parses_grow_geometrically(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 100_000
    total = 10 * n
    parses, parsed_bytes, last = count_parses(monkeypatch, n)
    eager = 1024
    # Every fragment while <= eager chars (about eager/10 of them), then at most one
    # parse per 25% growth: log_1.25(total / eager) more.
    assert parses <= eager // 10 + 2 + math.log(total / eager, 1.25) + 2
    # Work: at most eager per early fragment, plus 1 + 1/0.25 times the size.
    assert parsed_bytes <= (eager // 10 + 2) * eager + 5 * total
    # Between re-parses the partial is at most 25% behind.
    assert len(last["s"]) >= total / 1.25 - 16


@pytest.mark.slow  # a megabyte of arguments in 100,000 fragments
def test_parse_work_per_byte_does_not_grow_with_size(monkeypatch: pytest.MonkeyPatch) -> None:
    _, small, _ = count_parses(monkeypatch, 1_000)
    _, large, _ = count_parses(monkeypatch, 100_000)
    assert large / 1_000_000 <= 2 * small / 10_000


def test_partial_is_exact_below_eager_chars() -> None:
    text = json.dumps({"s": "x" * 100})
    out = run(call(list(text)), eager_chars=len(text))
    assert partials(out) == [
        jiter.from_json(text[: i + 1].encode(), partial_mode="trailing-strings")
        for i in range(len(text))
    ]


# -- property: the same tool calls as the openai SDK's own accumulator ------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def chunk_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """A Chat Completions chunk stream with 1-3 parallel tool calls, and the calls sent."""
    texts: list[str] = []
    fragments: list[list[str]] = []
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))
        empty = draw(st.integers(0, 9)) == 0  # sometimes "" (a call without arguments)
        text = "" if empty else json.dumps(value, ensure_ascii=draw(st.booleans()))
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
        texts.append(text)
        fragments.append([text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])])
    # Interleave the calls' deltas at random, each call's in order. Calls are indexed in the
    # order they start (the SDK's accumulator, like the API, needs index i+1 after i).
    order = draw(st.permutations([k for k, f in enumerate(fragments) for _ in f]))
    index: dict[int, int] = {}
    suffix = draw(st.text("abc", max_size=3))
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    ]
    for k in order:
        fragment = fragments[k].pop(0)
        tc: dict[str, Any] = {"function": {"arguments": fragment}}
        if k not in index:  # the call's first delta: id, type and name
            i = index[k] = len(index)
            tc.update(id=f"call_{i}_{suffix}", type="function")
            tc["function"]["name"] = f"tool_{i}"
        tc["index"] = index[k]
        delta = {"tool_calls": [tc]}
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    sent = sorted((index[k], texts[k]) for k in index)
    return chunks, [(f"call_{i}_{suffix}", f"tool_{i}", text) for i, text in sent]


@settings(max_examples=200, deadline=None)
@given(chunk_streams())
def test_same_tool_calls_as_the_openai_sdk(
    stream: tuple[list[dict[str, Any]], list[tuple[str, str, str]]],
) -> None:
    from operators.extract_deltas import extract_deltas

    chunks, sent = stream
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    message = state.get_final_completion().choices[0].message
    sdk = [(tc.id, tc.function.name, tc.function.arguments) for tc in message.tool_calls or []]
    assert sdk == sent  # the generator and the SDK agree on what was sent

    out, errors, done = collect(
        reactivex.from_iterable(chunks).pipe(extract_deltas("s")), assemble_tool_calls()
    )
    assert errors == []
    assert done
    assert [e.seq for e in out] == list(range(len(out)))
    ours = completed(out)
    assert [(v.id, v.name, v.arguments) for v in ours] == sdk
    assert [v.parsed for v in ours] == [json.loads(a) if a else {} for _, _, a in sent]
    # Every partial is a partial parse of the final value of its call.
    final = {v.index: v.parsed for v in ours}
    for event in out:
        if isinstance(event, ToolCallDelta) and event.partial is not None:
            assert is_prefix_value(event.partial, final[event.index])
