"""Remote backends: a TransformerLens 4.3 ``RemoteBridge`` (vLLM, Inspect), and what tlens_icl runs on one.

A ``RemoteBridge`` holds no weights. A driver runs each forward pass - for vLLM, on its own engine
(PagedAttention, CUDA graphs, tensor/pipeline parallelism over GPUs via
``RemoteBridge.boot_vllm(name, tensor_parallel_size=..., pipeline_parallel_size=...)``) - and offers two
things per forward, both only at the hook points the driver declares (``supported_hook_points``):

* **capture**: activations recorded during the forward and replayed through the bridge's hook points
  afterwards, so a tlens_icl capture hook sees them as usual (read-only: a hook's return value is
  discarded);
* **intervene**: declarative edits ``{"op": "add" | "set" | "scale" | "suppress", "value"/"factor", "pos"}``,
  one per hook point per forward, ``pos`` a position or list of positions (vLLM: only with
  ``boot_vllm(enable_position_interventions=True)``).

vLLM's decoder-only overlay declares ``embed.hook_out``, ``blocks.L.hook_out`` (= ``hook_resid_post``),
``blocks.L.attn.hook_out`` (= ``hook_attn_out``), ``blocks.L.mlp.hook_out`` (= ``hook_mlp_out``) and
``ln_final.hook_normalized``; it cannot fire per-head outputs (``hook_z``), attention patterns, q/k/v or
``hook_resid_pre`` (fused kernels), and has no backward pass.

What follows for tlens_icl (:data:`RUNS_ON_REMOTE`, :data:`NEEDS_LOCAL`): analyses that only read the
residual stream or layer outputs, or add/set a vector in it, run on a remote model; analyses that need
per-head outputs, attention patterns or gradients refuse before any forward pass with
:class:`~tlens_icl.errors.UnsupportedOnBackendError`, naming the alternative (the same model loaded
through accelerate with ``load_model(name, device_map=...)``).

Translation: one prompt per driver call (vLLM's compiled path takes one; its batched eager path takes many
but no position edits), a :class:`SpecHook` (an edit the engine would otherwise run as a hook function,
defined here) becomes an ``intervene`` spec at the driver's name for the hook point, other hooks are
captures. The driver's facts (rows per call, the hook points it declares) are resolved once into the
model's :class:`~tlens_icl.models.adapter.ModelHandle`, whose forward sends the pending edits
(:func:`~tlens_icl.models.adapter.pending_edits`, installed by :func:`tlens_icl.engine.hooks.checked_hooks`). A capture hook that returns a tensor (an edit with no spec form) raises instead of
being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.errors import TlensICLError, UnsupportedOnBackendError
from tlens_icl.models.adapter import is_remote  # the family test lives with the others (adapter.family)

Op = Literal["add", "set", "scale", "suppress"]

#: Public entry points that run on a remote (vLLM) model: they read resid/attn/mlp outputs or add/set vectors.
RUNS_ON_REMOTE = (
    "icl_accuracy", "task_activations / collect_activations (sites resid_post, attn_out, mlp_out)",
    "concept_decodability", "rsa", "probe", "task_vector / task_vector_sweep", "function_vector_sweep (a given FV)",
    "steer / evaluate_steering with function or task vectors (add; replace with coeff 1)",
    "in_context_vector (computing it)",
)
#: Public entry points that need a local model (per-head outputs, attention patterns or gradients).
NEEDS_LOCAL = (
    "indirect_effect", "head_patching", "activation_patching", "attribution_patching", "mean_head_activations",
    "function_vector_from_task", "soft_injection", "head scores / ablation", "attention_ratio",
    "collect_activations with z / head_out / resid_pre", "steer with an in-context vector or a soft injection (norm-preserving or per-head edits are no add/set edits)",
    "generate (its per-row edits are no driver specs)",
)
ALTERNATIVE = ("load the same checkpoint through accelerate instead - tlens_icl.load_model(name, n_devices=N) or "
               "load_model(name, device_map='auto', max_memory={...}) - which runs every analysis; a function "
               "vector computed there can then be evaluated on vLLM with function_vector_sweep")


def canonical(model: ModelLike, name: str) -> str:
    """The driver's name for hook ``name`` (``blocks.3.hook_resid_post`` -> ``blocks.3.hook_out``)."""
    hp = model.hook_dict.get(name)  # type: ignore[attr-defined]
    if hp is None or not getattr(hp, "name", None):
        raise unsupported(name)
    return str(hp.name)


def unsupported(name: str, what: str = "") -> UnsupportedOnBackendError:
    """The error for a hook (or operation) this remote backend cannot serve, naming the alternative."""
    why = what or (f"this remote backend (a RemoteBridge, e.g. vLLM) cannot fire or edit {name!r}: vLLM fuses "
                   "per-head outputs, attention patterns and q/k/v into its kernels and exposes only the residual "
                   "stream and layer outputs (hook_resid_post, hook_attn_out, hook_mlp_out)")
    return UnsupportedOnBackendError(
        f"{why}. Analyses that run on vLLM: {', '.join(RUNS_ON_REMOTE)}. This one needs a local model: {ALTERNATIVE}.")


# ---- edits that have a declarative form ----------------------------------------------------------------
@dataclass
class SpecHook:
    """An edit of one hook's activation that a remote driver can apply: ``op`` at ``pos`` of each row.

    Called as a hook (``fn(act, hook)``) it edits a local model's activation (on the activation's device
    and dtype); :meth:`spec` is the same edit as a driver ``intervene`` entry. ``value`` is a scalar or a
    ``[width]`` vector; ``pos`` is None (every position), one position, or one per row of the forward.
    """

    op: Op
    value: Tensor | float | None = None
    factor: float | None = None
    pos: int | Int[Tensor, " batch"] | Literal["last"] | None = None

    def __post_init__(self) -> None:
        if self.op not in ("add", "set", "scale", "suppress"):
            raise ValueError(f"op must be add, set, scale or suppress, got {self.op!r}.")
        if (self.op in ("add", "set")) != (self.value is not None) or (self.op == "scale") != (self.factor is not None):
            raise ValueError(f"op={self.op!r} takes {'value' if self.op in ('add', 'set') else 'factor' if self.op == 'scale' else 'nothing'}.")

    def __call__(self, act: Tensor, hook: Any = None) -> Tensor:
        out = act.clone()
        if self.pos is None:
            rows, cols = slice(None), slice(None)
        else:
            rows = torch.arange(act.shape[0], device=act.device)
            pos = torch.tensor(act.shape[1] - 1) if isinstance(self.pos, str) else torch.as_tensor(self.pos).long()
            if pos.dim() == 1 and pos.shape[0] != act.shape[0]:
                raise TlensICLError(f"{pos.shape[0]} positions for a forward pass of {act.shape[0]} rows.")
            if int(pos.max()) >= act.shape[1]:
                raise TlensICLError(f"position={int(pos.max())} is outside this {act.shape[1]}-token forward pass.")
            cols = (pos.expand(act.shape[0]) if pos.dim() == 0 else pos).to(act.device)
        cur = out[rows, cols]
        if self.op == "suppress":
            new = torch.zeros_like(cur)
        elif self.op == "scale":
            new = cur * float(self.factor)  # type: ignore[arg-type]
        else:
            v = torch.as_tensor(self.value).to(device=act.device, dtype=act.dtype)
            new = cur + v if self.op == "add" else v.expand_as(cur).clone()
        out[rows, cols] = new
        return out

    def spec(self, row: int = 0, length: int = 0) -> dict[str, Any]:
        """This edit as a driver ``intervene`` spec for row ``row`` of a ``length``-token forward."""
        spec: dict[str, Any] = {"op": self.op}
        if self.value is not None:
            v = self.value
            spec["value"] = v.detach().float().cpu() if isinstance(v, Tensor) and v.dim() else float(v)
        if self.factor is not None:
            spec["factor"] = float(self.factor)
        if isinstance(self.pos, str):
            spec["pos"] = length - 1
        elif self.pos is not None:
            pos = torch.as_tensor(self.pos).long()
            spec["pos"] = int(pos) if pos.dim() == 0 else int(pos[row])
        return spec


__all__ = ["ALTERNATIVE", "NEEDS_LOCAL", "RUNS_ON_REMOTE", "SpecHook", "is_remote", "unsupported"]
