"""The built-in model with its recorder, in a process of its own (the cancellation row).

``MockServer`` keeps its recorder in its own process; run here, the model
does not share the measured client's interpreter (and its lock), and the
client asks for the record over stdin/stdout:

    python -m bench.recorded_mock INTERVAL     # prints the port, then answers:
    report                                     # -> [{"key": fault_key, "closed_at": t}, ...]
    quit

``closed_at`` is ``time.monotonic()``, the same clock in every process on Linux.
"""

from __future__ import annotations

import json
import resource
import sys


def main() -> None:
    from pipeline.apps.builtin_model import MockScript, MockServer

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    interval = float(sys.argv[1])
    with MockServer(MockScript(interval=interval), shutdown_grace=1.0) as server:
        print(server.port, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "report":
                rows = [
                    {
                        "key": (record.script or {}).get("fault_key"),
                        "closed_at": record.connection.closed_at if record.connection else None,
                    }
                    for record in server.recorder.requests
                ]
                print(json.dumps(rows), flush=True)
            elif command == "quit":
                break


if __name__ == "__main__":
    main()
