"""Analyses: one module per method, one public entry point each, each returning a frozen result."""
