"""Representational analyses: activation sets, concept decodability, RSA, probing, attention ratio."""
