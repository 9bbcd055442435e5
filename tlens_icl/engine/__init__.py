"""The engine: hook names, forward passes, one capture path and one intervention engine.

Every analysis runs the model through this package; it never spells a hook name or installs a hook
itself. The modules, bottom up:

* ``hooks`` - the one module that spells hook names; :func:`~tlens_icl.engine.hooks.checked_hooks`
  installs hooks and raises when one did not fire.
* ``runs`` - plain forwards: :func:`~tlens_icl.engine.runs.query_logits`, and the row plan every
  forward shares (:func:`~tlens_icl.engine.runs.query_plan`: rows sorted by query position, cut after
  it, capped by the model's memory budget, with back-off on out-of-memory: :func:`~tlens_icl.engine.runs.in_plan`);
  :func:`~tlens_icl.engine.runs.logit_rows`:
  logits only at the positions read (the forward cut before the unembedding, proven once per model).
* ``scoring`` - metrics of the logits at the query.
* ``capture`` - **the one capture path**: :func:`~tlens_icl.engine.capture.capture` hands each hooked
  activation to a reducer (:class:`~tlens_icl.engine.capture.AtPositions` - e.g. the query;
  :class:`~tlens_icl.engine.capture.Weighted` - a mean over a token role;
  :class:`~tlens_icl.engine.capture.Summed` - for means over prompts; :class:`~tlens_icl.engine.capture.Custom`)
  and keeps one float32 CPU value per row. Used by mediation's mean step and head values
  (:func:`~tlens_icl.engine.capture.query_z`), the vector methods, activation sets, head scores,
  attention ratios and ablation means.
* ``query`` - **the one intervention engine** at the query position:
  :func:`~tlens_icl.engine.query.query_interventions` evaluates many variants (an
  :class:`~tlens_icl.engine.query.Interventions`: vectorised edits, one per hook) from one unpatched
  base run, by the fastest exact route the model allows - ``kv`` (the base run's keys/values reused,
  only query copies recomputed from each variant's first edited layer; :mod:`tlens_icl.models.kv`),
  ``copies`` (query copies appended to the prompt under a 4-D mask and ``position_ids``) or ``naive``
  (one forward per variant). An unpatched control copy in every forward must reproduce the base run
  (tolerance scaled to the dtype), else the call falls back with one warning. Builders:
  :func:`~tlens_icl.engine.query.set_heads` (head patching, mediation),
  :func:`~tlens_icl.engine.query.set_head_means` (mean ablation),
  :func:`~tlens_icl.engine.query.blend_heads` (soft injection),
  :func:`~tlens_icl.engine.query.resid_edits` (function/task vector layer sweeps).
* ``positions`` - interventions at other positions: :func:`~tlens_icl.engine.positions.patch_layer_positions`
  (activation patching by layer x position: each cell replays only its suffix through the blocks from
  its layer on, reusing the base run's keys/values of the prefix; cells that are exactly the unpatched
  run are skipped) and a per-cell loop for head outputs at token roles.
* ``ablation`` / ``attention`` - mean ablation of heads (at every token, or at the query on the
  engine) and attention-pattern statistics (on the capture path).

Conventions: every tensor a hook creates lives on that activation's device and dtype; statistics
accumulate in float32; results come back as float32 on the CPU; forwards run under ``torch.inference_mode``.
Model-family differences (which route is possible, how keys/values are recorded) live in
:mod:`tlens_icl.models`.
"""
