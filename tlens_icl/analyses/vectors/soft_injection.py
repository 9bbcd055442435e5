"""Soft injection of task embeddings (Park & Rhee, 2025): learned per-head blending at the query token.

1. Task embedding ``e[l, j]`` = mean ``hook_z`` of head ``(l, j)`` at the query position over ICL
   prompts (the same quantity a function vector starts from).
2. At the query position of a zero-shot prompt every head is blended:
   ``z[l, j] <- (1 - alpha[l, j]) * z[l, j] + alpha[l, j] * e[l, j]`` with ``alpha = sigmoid(theta)``.
3. ``theta`` (init 0, i.e. alpha = 0.5) is trained with Adam on zero-shot prompts to minimise the
   cross-entropy of the first answer token; the model stays frozen.

``alpha = 0`` everywhere is exactly a no-op; ``alpha = 1`` on a head replaces that head's output by the
task embedding (mean-activation patching). Applying it: ``SteeringVector.from_soft_injection(si)`` (mode
``"replace"`` at site ``"z"`` with ``head_weights = alpha``) with :func:`~tlens_icl.steer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.vectors.common import (
    Position,
    VectorOps,
    mean_head_activations,
    position_index,
)
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.engine import hooks
from tlens_icl.engine.hooks import checked_hooks
from tlens_icl.engine.runs import logit_rows
from tlens_icl.errors import TlensICLError
from tlens_icl.models.adapter import device_of as _device
from tlens_icl.prompts.spec import PromptSpec
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task


@dataclass(frozen=True)
class SoftInjection(VectorOps, Result):
    """Per-head task embeddings and learned mixing logits (``alpha = sigmoid(theta)``)."""

    embeddings: Float[Tensor, "layer head d_head"]
    theta: Float[Tensor, "layer head"]
    losses: Float[Tensor, " step"]
    task: str
    info: dict[str, Any]

    title = "Soft injection"

    @property
    def alpha(self) -> Float[Tensor, "layer head"]:
        return torch.sigmoid(self.theta)

    def to_steering_vector(self, **kwargs: Any) -> SteeringVector:
        """:meth:`SteeringVector.from_soft_injection` of this injection (every head's ``hook_z`` at the query)."""
        return SteeringVector.from_soft_injection(self, **kwargs)

    def to_dataframe(self) -> Any:
        import pandas as pd

        a = self.alpha
        return pd.DataFrame([{"task": self.task, "layer": L, "head": h, "alpha": float(a[L, h])}
                             for L in range(a.shape[0]) for h in range(a.shape[1])])

    def summary(self) -> str:
        a = self.alpha
        top = torch.topk(a.flatten(), min(3, a.numel()))
        heads = ", ".join(f"L{int(i) // a.shape[1]}H{int(i) % a.shape[1]} {float(v):.2f}" for v, i in zip(*top))
        final = f", final loss {float(self.losses[-1]):.3f}" if self.losses.numel() else ""
        return f"Soft injection for {self.task} ({self.model_name}): mean alpha {float(a.mean()):.2f}, top {heads}{final}"

    def plot(self, ax: Any = None) -> Any:
        """Layer x head heatmap of alpha on a fixed 0..1 scale (0 = head untouched, 1 = replaced)."""
        from tlens_icl.viz.plots import head_heatmap

        a = self.alpha.detach().cpu()
        steps = self.losses.numel()
        loss = f", final loss {float(self.losses[-1]):.3g}" if steps else ""
        return head_heatmap(a, title=f"Soft injection mixing weight alpha per head: {self.task}", ax=ax,
                            cmap="viridis", vmin=0.0, vmax=1.0, label="alpha (0 = untouched, 1 = replaced)",
                            subtitle=self._subtitle(f"{steps} training steps{loss}"))


def _training_hooks(
    model: ModelLike, embeddings: Tensor, theta: Tensor, *, position: Position = "query",
    query_pos: Int[Tensor, " batch"] | None = None,
) -> list[tuple[str, Any]]:
    """Hooks blending every head's ``hook_z`` at ``position`` with ``alpha = sigmoid(theta)`` (a training step: the
    gradient reaches ``theta`` through the hooks). Applying a trained injection is ``SteeringVector.from_soft_injection``."""
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    if tuple(theta.shape) != shape or tuple(embeddings.shape) != (*shape, model.cfg.d_head):
        raise TlensICLError(f"Soft injection shapes {tuple(embeddings.shape)} do not fit the model {shape}.")

    def make(layer: int) -> Any:
        def hook(z: Tensor, hook: Any) -> Tensor:
            rows, cols = position_index(z, position, query_pos)
            a = torch.sigmoid(theta[layer]).to(device=z.device, dtype=z.dtype)[:, None]
            e = embeddings[layer].to(device=z.device, dtype=z.dtype)
            out = z.clone()
            out[rows, cols] = (1 - a) * z[rows, cols] + a * e
            return out
        return hook

    return [(hooks.z(L), make(L)) for L in range(model.cfg.n_layers)]


@checked
def soft_injection(
    model: ModelLike, task: Task | str, *, n_mean: int = 32, n_shots: int = 10, n_fit: int = 64,
    steps: int = 100, lr: float = 0.2, train_batch_size: int = 8, seed: int = 0,
    template: PromptTemplate | str | None = None, demos_from: Task | str | None = None, batch_size: int = 32,
    progress: bool | None = None,
) -> SoftInjection:
    """Task embeddings: the mean head outputs of ``n_mean`` ICL prompts; ``theta`` fit on ``n_fit`` zero-shot prompts.

    The two sets are the ``mean`` and ``fit`` streams of ``PromptSpec((task,), seed=seed)``
    (:mod:`tlens_icl.prompts.spec`): independent of each other and of any run's measured (``clean``) prompts.

    Train on items disjoint from the evaluation items (``Task.split``). Adam, ``lr`` and ``steps`` as in
    the paper (0.2, 400 steps of batch 1); here minibatches of ``train_batch_size`` prompts.
    """
    from tlens_icl.engine.progress import progress_bar

    if steps < 0 or train_batch_size < 1:
        raise TlensICLError("steps must be >= 0 and train_batch_size >= 1.")
    spec = PromptSpec((task,), n=n_fit, n_shots=n_shots, seed=seed, template=template)
    icl = spec.prompts(model, "mean", n=n_mean, demos_from=demos_from)
    train = spec.prompts(model, "fit", n_shots=0)
    emb = mean_head_activations(model, icl, batch_size=batch_size)
    theta = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in progress_bar(range(steps), enabled=progress, desc="soft injection"):
        sub = train.select(torch.randperm(len(train), generator=gen)[:train_batch_size])
        fwd = _training_hooks(model, emb, theta, query_pos=sub.query_pos)
        at = logit_rows(model, sub.query_pos, fwd)  # the query row only is unembedded
        with torch.enable_grad(), checked_hooks(model, fwd + at.hooks):
            logits = at.read(model(sub.tokens.to(_device(model)))).float()
            loss = torch.nn.functional.cross_entropy(logits, sub.answer_tokens.to(logits.device))
            (grad,) = torch.autograd.grad(loss, [theta])  # model weights stay untouched
        theta.grad = grad
        opt.step()
        losses.append(float(loss.detach()))
    name = task if isinstance(task, str) else task.name
    info = run_info(model, method="soft_injection", n_mean=n_mean, n_shots=n_shots, n_fit=n_fit, steps=steps,
                    lr=lr, seed=seed, spec=spec.info(mean=n_mean, fit=n_fit))
    return SoftInjection(emb, theta.detach().clone(), torch.tensor(losses), name, info)
