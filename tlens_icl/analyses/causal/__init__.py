"""Causal analyses: head and activation patching, causal mediation (AIE), attribution patching."""
