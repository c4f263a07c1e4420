"""Rows through ``rxllm serve`` (placeholder)."""

from __future__ import annotations

import argparse

from bench.common import Measured


def measure_serve(mode: str, args: argparse.Namespace) -> Measured:
    return Measured(skipped="not written yet")
