"""The engine: hook names, forward passes over prompt batches, scoring, capture and interventions.

Every analysis runs the model through this package: ``hooks`` (the one module that spells hook names
and proves hooks fired), ``runs`` (chunked forwards, logits at each row's query position),
``scoring`` (per-example metrics) and ``query`` (capture and exact interventions at the query).
"""
