"""Frozen result objects: one base class (save/load, tables, plots, HTML) and shared statistics."""

from tlens_icl.results.base import SCHEMA_VERSION, Result, run_info, tensors_equal

__all__ = ["SCHEMA_VERSION", "Result", "run_info", "tensors_equal"]
