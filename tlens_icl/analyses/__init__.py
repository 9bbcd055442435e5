"""Analyses, by family: ``accuracy`` (ICL curves), ``causal`` (patching, mediation, attribution),
``vectors`` (function/task/in-context vectors, soft injection), ``representations`` (activations,
decodability, RSA, probing, attention ratio). One public entry point per analysis, each returning a
frozen result."""
