"""rxllm's benchmarks: ``python -m bench.run`` (method and results: ``bench/README.md``)."""
