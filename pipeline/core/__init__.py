"""The core every layer may import.

The event model, the error taxonomy, SSE decoding and the accumulated result.
"""

__all__: list[str] = []
