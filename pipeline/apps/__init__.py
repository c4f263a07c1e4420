"""The applications on top: ``rxllm serve``, the CLI and the built-in model."""

__all__: list[str] = []
