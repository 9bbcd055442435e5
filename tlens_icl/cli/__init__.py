"""Command line ``tlens-icl``: sits on top of the analyses and is never imported by them."""

from tlens_icl.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
