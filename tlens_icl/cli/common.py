"""Options shared by every model-running subcommand."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser, *, shots_default: int | None = 10) -> None:
    """Options shared by every model-running subcommand."""
    p.add_argument("--model", default="icl-tiny", help="embedded model name, HF name or local path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", default=None, help="qa | arrow (default: the model's own)")
    if shots_default is not None:
        p.add_argument("--shots", type=int, default=shots_default)
