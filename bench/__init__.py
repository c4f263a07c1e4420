"""rxllm's benchmarks: ``python -m bench.run`` (see the README, section Performance)."""
