"""The ``rxllm record`` and ``rxllm replay`` commands.

rxllm record "PROMPT" [-o FILE]          stream an answer, print it, and save it as JSON Lines
rxllm replay FILE|ID [--speed X] [--db URL]   play a recording back at its original pace
rxllm replay FILE|ID --timeline          print its timeline at once: TTFT, gaps, runs of events
rxllm inspect FILE|ID [--db URL]         the same as replay --timeline

``record`` talks to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` when either is
set, else to the built-in model (:class:`pipeline.apps.builtin_model.MockServer`). The
recording is one event per line (:class:`sinks.jsonl_recorder.JsonlRecorder`),
with each event's time offset, so ``replay`` shows the text as it arrived.

``replay`` takes a ``.jsonl`` recording, a raw ``.sse`` body (no timing: it
plays at once), or the id of a stream in the transcript store (``--db``,
else ``$RXLLM_DB_URL``, else ``./rxllm.db``). ``--speed 2`` plays twice as
fast, ``--speed inf`` as fast as possible. ``--timeline`` prints, instead of
playing it, the stream's timeline (:func:`pipeline.core.text_timeline.text_timeline`):
time to first token, the gaps between tokens (the long ones flagged), and its
events in runs, for a terminal without a browser.

Wired into :mod:`pipeline.apps.cli` with :func:`add_commands` and
:func:`run_command`; ``python -m pipeline.apps.record_replay_cli`` runs them alone.

Exit status: 0 when the stream finished, 1 when it ended in an error or was
cancelled, 2 for a file or stream that can't be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pipeline.core.events import Event
    from pipeline.runtime.multicast import StreamRun

__all__ = ["COMMANDS", "add_commands", "main", "run_command"]

COMMANDS = frozenset({"record", "replay", "inspect"})
"""The commands :func:`add_commands` adds; :func:`run_command` runs them."""

_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_PATH_SUFFIXES = {".jsonl", ".json", ".sse", ".ndjson", ".txt"}


def _positive_speed(text: str) -> float:
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not speed > 0:
        raise argparse.ArgumentTypeError("the speed must be > 0 (inf: as fast as possible)")
    return speed


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``record`` and ``replay`` to the ``rxllm`` parser's subcommands.

    Example::

        commands = parser.add_subparsers(dest="command", required=True)
        add_commands(commands)
    """
    record = subparsers.add_parser(
        "record",
        help="stream an answer and save it as a JSON Lines recording",
        description="Stream an answer into the terminal and record its events, with their "
        "timing, one JSON per line. Uses OPENAI_BASE_URL / OPENAI_API_KEY when set, the "
        "built-in model otherwise.",
    )
    record.add_argument("prompt")
    record.add_argument(
        "-o", "--output", help="the recording's file (default: recording-DATE-TIME.jsonl)"
    )
    record.add_argument("--model", default=os.environ.get("RXLLM_MODEL", "gpt-4o-mini"))
    record.add_argument("--responses", action="store_true", help="use the Responses API")
    record.add_argument(
        "--mock-rate", type=float, default=40.0, help="built-in model: tokens per second"
    )

    replay = subparsers.add_parser(
        "replay",
        help="play a recording or a stored stream at its original pace",
        description="Play a JSON Lines recording, a raw .sse body, or a stream of the "
        "transcript store (by id) in the terminal: the text appears as it arrived.",
    )
    replay.add_argument("source", metavar="FILE|ID")
    replay.add_argument(
        "--speed",
        type=_positive_speed,
        default=1.0,
        help="speed factor: 2 is twice as fast, inf as fast as possible (default 1)",
    )
    replay.add_argument(
        "--db", help="the transcript store's URL (default: $RXLLM_DB_URL, else ./rxllm.db)"
    )
    replay.add_argument(
        "--timeline",
        action="store_true",
        help="print the stream's timeline (TTFT, gaps, events) at once instead of playing it",
    )

    inspect = subparsers.add_parser(
        "inspect",
        help="print a recording's or a stored stream's timeline: TTFT, gaps, events",
        description="Print the timeline of a JSON Lines recording, a raw .sse body, or a "
        "stream of the transcript store (by id): the same as replay --timeline.",
    )
    inspect.add_argument("source", metavar="FILE|ID")
    inspect.add_argument(
        "--db", help="the transcript store's URL (default: $RXLLM_DB_URL, else ./rxllm.db)"
    )
    inspect.set_defaults(timeline=True, speed=1.0)


def run_command(args: argparse.Namespace) -> int:
    """Run the ``record``, ``replay`` or ``inspect`` command parsed into ``args``; return
    the exit status."""
    try:
        if args.command == "record":
            return _record(args, sys.stdout, sys.stderr)
        if args.command in ("replay", "inspect"):
            return _replay(args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    raise ValueError(f"not a command of pipeline.apps.record_replay_cli: {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``record`` or ``replay`` on their own (``python -m pipeline.apps.record_replay_cli``)."""
    parser = argparse.ArgumentParser(prog="rxllm", description="Record and replay streams.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


# -- rendering -------------------------------------------------------------------


def _render(event: Event, out: TextIO, dim: str, reset: str) -> None:
    from pipeline.core import events as ev

    if isinstance(event, ev.TextDelta | ev.RefusalDelta):
        out.write(event.text)
    elif isinstance(event, ev.ReasoningDelta):
        out.write(f"{dim}{event.text}{reset}")
    elif isinstance(event, ev.ToolCallStarted):
        out.write(f"\n[tool call {event.name}] ")
    elif isinstance(event, ev.ToolCallDelta):
        out.write(event.arguments)
    elif isinstance(event, ev.ToolCallCompleted):
        out.write(f"\n[tool call {event.name} complete]\n")
    elif isinstance(event, ev.ToolCallInvalid):
        out.write(f"\n[tool call {event.name} invalid: {event.error}]\n")
    elif isinstance(event, ev.StreamError):
        out.write(f"\n[error: {event.kind}: {event.message}]\n")
    elif isinstance(event, ev.Cancelled):
        out.write(f"\n[cancelled: {event.reason}]\n")
    else:
        return
    out.flush()


async def _play(run: StreamRun, out: TextIO) -> int:
    """Print ``run``'s events as they come, then the summary line; return the status."""
    from pipeline.apps.terminal_chat import summary_line
    from pipeline.core.result import Accumulator

    acc = Accumulator()
    run.subscribe(acc.add)
    reader = run.iterate()
    dim, reset = (_DIM, _RESET) if out.isatty() else ("", "")
    run.start()
    try:
        async for event in reader:
            _render(event, out, dim, reset)
    finally:
        run.cancel("interrupted")
    out.write("\n" + summary_line(acc) + "\n")
    out.flush()
    return 0 if acc.result().status == "finished" else 1


# -- record ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _client(mock_rate: float) -> AsyncIterator[object]:
    from openai import AsyncOpenAI

    from pipeline.apps.terminal_chat import client_from_env
    from pipeline.runtime.api_keys import NO_KEY

    configured = client_from_env()
    if configured is not None:
        async with configured as client:
            yield client
        return
    from pipeline.apps.builtin_model import MockScript, MockServer

    script = MockScript(interval=1.0 / mock_rate if mock_rate > 0 else 0.0)
    async with (
        MockServer(script) as server,
        AsyncOpenAI(base_url=server.base_url, api_key=NO_KEY) as client,
    ):
        yield client


def _record(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = Path(args.output or time.strftime("recording-%Y%m%d-%H%M%S.jsonl"))
    try:
        path.open("w", encoding="utf-8").close()  # fail now, not after the stream
    except OSError as exc:
        print(f"rxllm record: cannot write {path}: {exc.strerror or exc}", file=err)
        return 2
    return asyncio.run(_record_stream(args, path, out, err))


async def _record_stream(args: argparse.Namespace, path: Path, out: TextIO, err: TextIO) -> int:
    from openai import AsyncOpenAI

    from pipeline.runtime import sources
    from pipeline.runtime.multicast import StreamRun
    from pipeline.runtime.standard_chain import llm_stream
    from sinks.jsonl_recorder import record_to

    async with _client(args.mock_rate) as client:
        assert isinstance(client, AsyncOpenAI)
        if args.responses:
            source = sources.responses(client, model=args.model, input=args.prompt)
        else:
            source = sources.chat_completions(
                client,
                model=args.model,
                messages=[{"role": "user", "content": args.prompt}],
                stream_options={"include_usage": True},
            )
        run = StreamRun(llm_stream(source), errors_mapped=True)
        recorder = record_to(run, path)
        status = await _play(run, out)
    if recorder.error is not None:
        print(f"rxllm record: writing {path} failed: {recorder.error}", file=err)
        return 2
    print(f"recorded {recorder.events_written} events to {path}", file=err)
    return status


# -- replay ------------------------------------------------------------------------


def _looks_like_path(source: str) -> bool:
    return Path(source).suffix.lower() in _PATH_SUFFIXES or "/" in source or os.sep in source


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite store that does not exist (opening it would create it)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).expanduser().is_file()
    ):
        return database
    return None


async def _stored_events(url: str, stream_id: str) -> list[Event]:
    from sinks.store import Store, StoreSettings

    # An owner of its own: opening a store marks its owner's running streams
    # interrupted, and a reader must never do that to a live server's streams.
    settings = StoreSettings(owner=f"rxllm-replay-{secrets.token_hex(6)}")
    async with Store(url, settings=settings) as store:
        return await store.events(stream_id)


async def _play_events(events: list[Event] | Path, speed: float, out: TextIO) -> int:
    """Play a list of events at ``speed``, or a raw SSE body (a path) at once."""
    from pipeline.runtime.multicast import StreamRun
    from pipeline.runtime.replay import replay, replay_sse

    source = replay_sse(events) if isinstance(events, Path) else replay(events, speed=speed)
    return await _play(StreamRun(source), out)


def _replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.runtime.replay import RecordingError, load_jsonl

    source: str = args.source
    path = Path(source)
    events: list[Event] | Path
    if path.is_file():
        try:
            events = path if path.suffix.lower() == ".sse" else load_jsonl(path)
        except (OSError, RecordingError) as exc:
            print(f"rxllm {args.command}: {exc}", file=err)
            return 2
    elif _looks_like_path(source):
        print(f"rxllm {args.command}: no such file: {source}", file=err)
        return 2
    else:
        from sinks.store import resolve_url  # only here: a file's replay needs no SQLAlchemy

        url = resolve_url(args.db)
        missing = _missing_sqlite_file(url)
        if missing is not None:
            print(
                f"rxllm {args.command}: no file {source!r}, and no transcript store at {missing} "
                "to look it up in (give --db URL or set RXLLM_DB_URL)",
                file=err,
            )
            return 2
        events = asyncio.run(_stored_events(url, source))
        if not events:
            print(f"rxllm {args.command}: no file and no stored stream {source!r}", file=err)
            return 2
    if args.timeline:
        return _print_timeline(events, out)
    return asyncio.run(_play_events(events, args.speed, out))


def _print_timeline(events: list[Event] | Path, out: TextIO) -> int:
    """Print the timeline of a list of events, or of a raw SSE body; return the status."""
    from pipeline.core.events import Finished, is_terminal
    from pipeline.core.text_timeline import text_timeline
    from pipeline.runtime.replay import replay_sse

    if isinstance(events, Path):
        collected: list[Event] = []
        replay_sse(events).subscribe(collected.append)  # synchronous: no timing to keep
        events = collected
    out.write(text_timeline(events))
    out.flush()
    terminal = next((e for e in reversed(events) if is_terminal(e)), None)
    return 0 if isinstance(terminal, Finished) else 1


if __name__ == "__main__":
    sys.exit(main())
