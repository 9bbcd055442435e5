"""The one module that spells TransformerLens hook names, and hook installation that proves firing.

Every other module asks this one for names (``hooks.z(3)``) and installs hooks through
:func:`checked_hooks`, which raises :class:`~tlens_icl.errors.HookNotFiredError` when a hook did not
run during the forward pass. (The function-vectors reference code silently did nothing on GPT-NeoX;
we never do that.)

Residual-stream edits use ``hook_resid_pre``/``hook_resid_post`` only: in TransformerLens 4 a hook that
returns a new tensor at ``hook_resid_mid`` only changes the MLP input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tlens_icl.errors import HookNotFiredError, ModelStateError
from tlens_icl.models import remote
from tlens_icl.models.adapter import ModelHandle, pending_edits, resolved

HookFn = Callable[..., Any]


def embed() -> str:
    return "hook_embed"


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def z(layer: int) -> str:
    """Per-head attention output before W_O, ``[batch, pos, n_heads, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def q(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def k(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_k"


def v(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"


def pattern(layer: int) -> str:
    """Post-softmax attention, ``[batch, n_heads, query_pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def final_norm() -> str:
    return "ln_final.hook_normalized"


def unembed_in() -> str:
    """The unembedding's input (after the final norm and any reshape), ``[batch, pos, d_model]``."""
    return "unembed.hook_in"


def unembed_out() -> str:
    return "unembed.hook_out"


#: Names accepted by ``site=`` arguments, mapped to the hook-name function for a layer.
SITES: dict[str, Callable[[int], str]] = {
    "resid_pre": resid_pre,
    "resid_post": resid_post,
    "attn_out": attn_out,
    "mlp_out": mlp_out,
    "z": z,
    "pattern": pattern,
}


def site_name(site: str, layer: int) -> str:
    if site not in SITES:
        raise ValueError(f"Unknown site {site!r}; choose one of {sorted(SITES)}.")
    return SITES[site](layer)


@resolved
def require_hooks(model: ModelHandle, names: Sequence[str]) -> None:
    """Raise before any forward pass if the model lacks one of ``names`` (or, remote, cannot fire it)."""
    if model.fireable is not None:  # a remote driver: only the hook points it declares
        missing = [n for n in names if n not in model.fireable]
        if missing:
            raise remote.unsupported(missing[0])
        return
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        return  # a protocol-only model; firing is still checked after the run
    missing = [n for n in names if n not in hook_dict]
    if missing:
        raise ModelStateError(
            f"Model has no hook point(s) {missing[:4]}{'...' if len(missing) > 4 else ''}. "
            "This architecture does not expose them (e.g. Pythia has no hook_resid_mid; attn-only models "
            "have no MLP hooks)."
        )


@contextmanager
@resolved
def checked_hooks(
    model: ModelHandle,
    fwd_hooks: Sequence[tuple[str, HookFn]] = (),
    bwd_hooks: Sequence[tuple[str, HookFn]] = (),
) -> Iterator[None]:
    """Install hooks for the duration of the block; raise if any did not fire.

    Hooks are counted per entry, so two hooks on the same name are each checked. A hook that returns a
    new ``hook_pattern`` on a model that ignores pattern edits raises instead of doing nothing.

    On a remote model (:mod:`tlens_icl.models.remote`) an edit with a declarative form
    (:class:`~tlens_icl.models.remote.SpecHook`) is sent to the driver with each forward run through
    :func:`tlens_icl.models.adapter.forward` (and counts as fired when sent); other hooks are captures, and
    one that returns a tensor raises, since the remote engine would ignore the edit.
    """
    counts = [0] * (len(fwd_hooks) + len(bwd_hooks))
    is_remote = model.remote
    edits_ignored = model.pattern_edits_ignored and any(n.endswith(".attn.hook_pattern") for n, _ in fwd_hooks)

    def counted(i: int, fn: HookFn) -> HookFn:
        def wrapper(act: Any, hook: Any) -> Any:
            counts[i] += 1
            out = fn(act, hook=hook)
            if is_remote and out is not None:
                raise remote.unsupported(names[i], "this intervention edits an activation in a way a remote backend "
                                         "cannot apply (its hooks only read; it takes add/set/scale/suppress specs)")
            if out is not None and edits_ignored and names[i].endswith(".attn.hook_pattern"):
                raise ModelStateError(
                    f"A hook edits {names[i]}, but this model ignores hook_pattern edits (TransformerLens 3 native "
                    "attention fires the hook after using the pattern): the edit would silently do nothing."
                )
            return out

        return wrapper

    names = [n for n, _ in fwd_hooks] + [n for n, _ in bwd_hooks]
    require_hooks(model, names)
    if is_remote:
        if bwd_hooks:
            raise remote.unsupported(bwd_hooks[0][0], "a remote backend has no backward pass (gradients)")
        with _remote_hooks(model, fwd_hooks, counts, counted):
            yield
        silent = [names[i] for i, c in enumerate(counts) if c == 0]
        if silent:
            raise HookNotFiredError(f"Hook(s) {silent[:4]} never fired: no forward pass ran the remote model inside the "
                                    "`with` block (run it with tlens_icl.models.adapter.forward).")
        return
    fwd = [(n, counted(i, f)) for i, (n, f) in enumerate(fwd_hooks)]
    off = len(fwd_hooks)
    bwd = [(n, counted(off + i, f)) for i, (n, f) in enumerate(bwd_hooks)]
    # A sentinel on the embedding tells "no forward pass ran in the block" from "a hook was skipped".
    forwards = [0]
    hook_dict = getattr(model, "hook_dict", None)
    if names and hook_dict is not None and embed() in hook_dict:
        fwd.append((embed(), _sentinel(forwards)))
    with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        yield
    silent = [names[i] for i, c in enumerate(counts) if c == 0]
    if silent and hook_dict is not None and embed() in hook_dict and forwards[0] == 0:
        raise HookNotFiredError(
            f"No forward pass ran inside the `with` block, so hook(s) {silent[:4]} never fired and the "
            "intervention did nothing. Run the model (model(tokens), model.generate(...)) inside the block."
        )
    if silent:
        raise HookNotFiredError(
            f"Hook(s) {silent[:4]} never fired although the model ran: the intervention had no effect. Did the "
            "forward pass stop early (stop_at_layer), or is the hook gated (e.g. hook_result needs "
            "set_use_attn_result)?"
        )


@contextmanager
def _remote_hooks(model: ModelHandle, fwd_hooks: Sequence[tuple[str, HookFn]], counts: list[int],
                  counted: Callable[[int, HookFn], HookFn]) -> Iterator[None]:
    """Edits to the driver (:func:`tlens_icl.models.adapter.pending_edits`), the other hooks as captures."""
    edits, captures = [], []
    for i, (name, fn) in enumerate(fwd_hooks):
        if isinstance(fn, remote.SpecHook):
            counter = [0]
            edits.append((name, fn, counter, i))
        else:
            captures.append((name, counted(i, fn)))
    with pending_edits(model, [(n, fn, c) for n, fn, c, _ in edits]), model.hooks(fwd_hooks=captures):
        try:
            yield
        finally:
            for _, _, counter, i in edits:
                counts[i] += counter[0]


def _sentinel(counter: list[int]) -> HookFn:
    def count(act: Any, hook: Any) -> None:
        counter[0] += 1

    return count
