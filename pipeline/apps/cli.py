"""rxllm: streamed LLM answers as reactive streams, in a terminal, over HTTP, recorded and replayed.

rxllm chat "PROMPT"             stream an answer into the terminal
rxllm assemble FILE.sse         assemble a recorded raw SSE body into JSON
rxllm serve                     serve the pipeline over HTTP (the built-in model without --upstream)
rxllm record / replay           record a stream as JSON Lines, play one back
rxllm mock                      run the built-in OpenAI-compatible model

Every error is one line on stderr and a non-zero exit status: 1 when a stream
ended in an error, 2 for a mistake in the command or what it was given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pipeline.apps import record_replay_cli as replay_cli

__all__ = ["main"]


def _assemble(path: str, events: bool, out: TextIO, err: TextIO | None = None) -> int:
    from pipeline.core.result import Accumulator
    from pipeline.core.sse_decoder import SSEDecoder
    from pipeline.runtime.sources import sse_body
    from pipeline.runtime.standard_chain import llm_stream

    err = err if err is not None else sys.stderr
    try:
        body = Path(path).read_bytes()
    except OSError as exc:
        print(f"rxllm assemble: cannot read {path}: {exc.strerror}", file=err)
        return 2
    decoder = SSEDecoder()
    if not [*decoder.decode(body), *decoder.flush()]:
        print(
            f"rxllm assemble: {path} holds no server-sent events (no 'data:' line): "
            "give it a raw text/event-stream body as recorded",
            file=err,
        )
        return 2
    acc = Accumulator()

    def on_next(event: Any) -> None:
        if events:
            out.write(event.model_dump_json() + "\n")
        acc.add(event)

    llm_stream(sse_body(body)).subscribe(on_next)
    result = acc.result()
    if not events:
        json.dump(result.assembled(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    return 1 if result.error is not None else 0


async def _chat(args: argparse.Namespace, out: TextIO) -> int:
    from openai import AsyncOpenAI

    from pipeline.apps.terminal_chat import client_from_env, render_chat
    from pipeline.runtime.api_keys import NO_KEY

    client = client_from_env()
    if client is not None:
        async with client:
            return await render_chat(client, args.prompt, args.model, args.responses, out)
    from pipeline.apps.builtin_model import MockScript, MockServer

    script = MockScript(interval=1.0 / args.mock_rate if args.mock_rate > 0 else 0.0)
    async with MockServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key=NO_KEY)
        return await render_chat(client, args.prompt, args.model, args.responses, out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rxllm",
        description=__doc__.split("\n")[0],
        epilog="Run 'rxllm COMMAND --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser(
        "chat",
        help="stream an answer into the terminal",
        description="Stream an answer through the pipeline. Uses OPENAI_BASE_URL / "
        "OPENAI_API_KEY when set, the built-in model otherwise.",
    )
    chat.add_argument("prompt")
    chat.add_argument("--model", default=os.environ.get("RXLLM_MODEL", "gpt-4o-mini"))
    chat.add_argument("--responses", action="store_true", help="use the Responses API")
    chat.add_argument(
        "--mock-rate", type=float, default=40.0, help="built-in model: tokens per second"
    )

    assemble = commands.add_parser(
        "assemble",
        help="assemble a recorded raw SSE body",
        description="Read a recorded text/event-stream body (Chat Completions or Responses), "
        "run it through the operators and print the assembled result as JSON.",
    )
    assemble.add_argument("file")
    assemble.add_argument("--events", action="store_true", help="print the events instead")

    serve = commands.add_parser(
        "serve",
        help="serve the pipeline over HTTP",
        description="An OpenAI-compatible processing layer in front of an upstream: SSE out, "
        "transcripts stored, metrics at /metrics, a chat page at /. With no --upstream "
        "it runs the built-in model, so it needs no API key.",
    )
    # ServerSettings' defaults, said here without importing the server (tests check they agree).
    defaults = argparse.Namespace(
        host="127.0.0.1", port=8000, heartbeat=15.0, replay_size=4096, mock_tokens_per_second=30.0
    )
    serve.add_argument("--host", default=defaults.host, help="default: %(default)s (loopback only)")
    serve.add_argument("--port", type=int, default=defaults.port, help="default: %(default)s")
    serve.add_argument(
        "--upstream",
        help="the upstream's base URL, as its SDK takes it (env RXLLM_UPSTREAM or "
        "OPENAI_BASE_URL; default: the built-in model, which needs no key)",
    )
    serve.add_argument(
        "--upstream-api",
        metavar="LIST",
        help="the APIs the upstream speaks, of chat, responses, anthropic "
        "(default chat,responses; env RXLLM_UPSTREAM_API)",
    )
    serve.add_argument(
        "--config", help="TOML file: upstreams, key pools, failover (env RXLLM_CONFIG)"
    )
    serve.add_argument("--model", help="default model for the chat page (env RXLLM_MODEL)")
    serve.add_argument(
        "--api-key", help="the upstream's API key (env RXLLM_UPSTREAM_API_KEY or OPENAI_API_KEY)"
    )
    serve.add_argument(
        "--auth-token", help="require 'Authorization: Bearer TOKEN' (env RXLLM_AUTH_TOKEN)"
    )
    serve.add_argument(
        "--cors-origin", action="append", dest="cors_origins", help="allow this origin (repeat)"
    )
    serve.add_argument(
        "--db",
        dest="db_url",
        help="transcript store: a SQLite file or a database URL (env RXLLM_DB_URL; "
        "default: ./rxllm.db)",
    )
    serve.add_argument("--no-store", action="store_true", help="keep no transcripts")
    serve.add_argument(
        "--heartbeat",
        type=float,
        help=f"seconds of idle before a ': ping' (default: {defaults.heartbeat:g})",
    )
    serve.add_argument(
        "--replay-size",
        type=int,
        help="events kept per live stream for Last-Event-ID resume "
        f"(default: {defaults.replay_size})",
    )
    serve.add_argument(
        "--mock-rate",
        type=float,
        help="built-in model: tokens per second, 0 for no pause "
        f"(default: {defaults.mock_tokens_per_second:g})",
    )
    for name, default, what in (
        ("first-token", 60, "from the request to the first token"),
        ("idle", 30, "without an event after the first token"),
        ("total", 600, "for a whole attempt"),
    ):
        serve.add_argument(
            f"--{name}-timeout",
            type=float,
            metavar="SECONDS",
            help=f"upstream timeout: seconds {what} (default {default}; "
            "a request's x-rxllm-*-timeout header wins)",
        )
    serve.add_argument(
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="Redis for live events shared by several processes: resume and cancel "
        "across them (env RXLLM_REDIS_URL)",
    )
    serve.add_argument(
        "--instance",
        help="this process's name in Redis and the store (env RXLLM_INSTANCE; "
        "default with --redis: host:port)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the port (one core each); more than one needs --redis "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="default: %(default)s",
    )
    serve.add_argument(
        "--send-timeout",
        type=float,
        metavar="SECONDS",
        help="cut off a client that has not taken a write for this long (default 10)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection that has not sent complete request headers by then (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="answer 408 to a request whose body has not arrived by then (default 30)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="answer 503 to connections beyond N (default: what the open-file limit allows)",
    )
    serve.add_argument(
        "--allow-request-options",
        action="store_true",
        help="let a request body set the OpenAI SDK's 'timeout' and 'extra_query' "
        "(the gateway's own upstream timeout and the upstream URL's query); off: a 400",
    )

    replay_cli.add_commands(commands)

    mock = commands.add_parser(
        "mock",
        help="run the built-in OpenAI-compatible model",
        description="The built-in model alone, as an upstream for anything that takes an "
        "OpenAI base URL (http://HOST:PORT/v1); it answers to any model name and calls the "
        "tools it is offered. See docs/builtin-model.md.",
    )
    mock.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    mock.add_argument("--port", type=int, default=8001, help="default: %(default)s")
    mock.add_argument(
        "--mock-rate",
        type=float,
        default=30.0,
        help="tokens per second, 0 for no pause (default: %(default)s)",
    )
    # The flag's old name, kept working: every command names it --mock-rate now.
    mock.add_argument("--token-rate", dest="mock_rate", type=float, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (``rxllm assemble ... | head``): no more to say, no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


def _bad_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in ("http", "https") or not parts.netloc


def _run(args: argparse.Namespace) -> int:
    if args.command in replay_cli.COMMANDS:
        return replay_cli.run_command(args)
    if args.command == "assemble":
        return _assemble(args.file, args.events, sys.stdout, sys.stderr)
    if args.command == "chat":
        return asyncio.run(_chat(args, sys.stdout))
    if args.command == "serve":
        from pipeline.apps.server.server_settings import ServerSettings
        from pipeline.apps.server.uvicorn_runner import ListenError
        from pipeline.apps.server.uvicorn_runner import serve as run_server

        try:
            settings = ServerSettings.from_env(
                host=args.host,
                port=args.port,
                upstream=args.upstream,
                upstream_apis=args.upstream_api,
                config=args.config,
                model=args.model,
                api_key=args.api_key,
                auth_token=args.auth_token,
                cors_origins=tuple(args.cors_origins) if args.cors_origins else None,
                db_url=args.db_url,
                store=False if args.no_store else None,
                heartbeat=args.heartbeat,
                replay_size=args.replay_size,
                mock_tokens_per_second=args.mock_rate,
                first_token_timeout=args.first_token_timeout,
                idle_timeout=args.idle_timeout,
                total_timeout=args.total_timeout,
                redis_url=args.redis_url,
                allow_request_options=True if args.allow_request_options else None,
                send_timeout=args.send_timeout,
                header_timeout=args.header_timeout,
                body_timeout=args.body_timeout,
                max_connections=args.max_connections,
                instance=args.instance,
            )
        except ValueError as exc:  # a bad --upstream-api
            print(f"rxllm serve: {exc}", file=sys.stderr)
            return 2
        if settings.upstream is not None and _bad_url(settings.upstream):
            print(
                f"rxllm serve: the upstream must be an http(s) base URL such as "
                f"https://api.openai.com/v1, not {settings.upstream!r}",
                file=sys.stderr,
            )
            return 2
        if settings.config is not None:
            from pipeline.apps.server.config_file import load_config

            try:
                load_config(settings.config)
            except ValueError as exc:
                print(f"rxllm serve: {exc}", file=sys.stderr)
                return 2
        if args.workers < 1:
            print(f"rxllm serve: --workers must be 1 or more, got {args.workers}", file=sys.stderr)
            return 2
        if args.workers > 1:
            from pipeline.apps.server.worker_supervisor import WorkersError, run_workers

            try:
                run_workers(settings, args.workers, log_level=args.log_level)
            except WorkersError as exc:
                print(f"rxllm serve: {exc}", file=sys.stderr)
                return 2
            return 0
        try:
            run_server(settings, log_level=args.log_level)
        except ListenError as exc:
            print(f"rxllm serve: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "mock":
        from pipeline.apps.builtin_model import serve

        serve(host=args.host, port=args.port, tokens_per_second=args.mock_rate)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
