"""In-context vectors (Liu, Ye, Xing & Zou, ICML 2024): one steering direction per layer from demo pairs.

For each demonstration the last-token residual (``resid_post``, every layer, concatenated) is recorded
for a *negative* and a *positive* prompt, and ``Delta H = H(positive) - H(negative)``. The ICV is the
first principal direction of ``{Delta H}`` (scikit-learn PCA; sign chosen to agree with the mean
difference), reshaped to ``[layer, d_model]``. ``direction="pc1+mean"`` is what the reference code
actually injects: the unit PC1 plus the mean difference (dominated by the mean).

* ``contrast="pair"`` (the paper): negative = ``x ->``, positive = ``x -> y`` (the demo with its answer).
* ``contrast="icl"``: negative = the zero-shot prompt, positive = the same query after demonstrations.

Injection (``SteeringVector.from_in_context_vector(icv, coeff=0.1)``, applied with :func:`~tlens_icl.steer`) at
every layer's ``resid_post`` and every position, norm-preserving (mode ``"norm_preserving"``):
``x' = |x| * normalize(normalize(x) + coeff * (1 + relu(cos(x, -v))) * normalize(v))``.
``coeff=0`` leaves the activations unchanged; a larger coefficient (the paper's strength) = further toward the
positive side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.vectors.common import VectorOps, decode_vector, query_residuals
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.errors import TlensICLError
from tlens_icl.prompts.batch import ROLE_ID, PromptBatch
from tlens_icl.prompts.pairs import make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task

Contrast = Literal["pair", "icl"]
Direction = Literal["pc1", "pc1+mean"]


@dataclass(frozen=True)
class InContextVector(VectorOps, Result):
    """Per-layer steering directions ``directions[l]`` (only their direction matters when injected).

    ``mean_difference`` is the mean of ``Delta H``; ``explained_variance_ratio`` that of PC1.
    """

    directions: Float[Tensor, "layer d_model"]
    mean_difference: Float[Tensor, "layer d_model"]
    explained_variance_ratio: float
    task: str
    contrast: str
    direction: str
    info: dict[str, Any]

    title = "In-context vector"
    finite = ("directions", "mean_difference")

    def decode(self, model: ModelLike, k: int = 10, *, layer: int = -1) -> list[tuple[str, float]]:
        """Top-``k`` tokens of the direction at ``layer`` (default: last) through the unembedding."""
        d = self.directions[layer]
        return decode_vector(model, d / d.norm().clamp_min(1e-12) * self.mean_difference[layer].norm(), k)

    def to_steering_vector(self, **kwargs: Any) -> SteeringVector:
        """:meth:`SteeringVector.from_in_context_vector` of this vector (every layer and position, norm-preserving)."""
        return SteeringVector.from_in_context_vector(self, **kwargs)

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"task": self.task, "layer": L, "direction_norm": float(d.norm()),
                              "mean_difference_norm": float(m.norm()),
                              "cos(direction, mean)": float(torch.cosine_similarity(d, m, dim=0))}
                             for L, (d, m) in enumerate(zip(self.directions, self.mean_difference))])

    def summary(self) -> str:
        return (f"In-context vector for {self.task} ({self.model_name}; {self.contrast} contrast, {self.direction}), "
                f"PC1 explains {self.explained_variance_ratio:.2f} of the variance")

    def plot(self, ax: Any = None) -> Any:
        """Per layer: cosine between the steering direction and the mean difference (sign-aligned PC1 -> +1)."""
        from tlens_icl.viz.plots import line_plot

        df = self.to_dataframe()
        return line_plot(df["layer"].tolist(), {"cos(direction, mean difference)": df["cos(direction, mean)"].tolist()},
                         xlabel="layer", ylabel="cos(PC1 direction, mean difference)", ax=ax, ylim=(-1.05, 1.05),
                         hline=0.0, hline_label="orthogonal (0)",
                         title=f"In-context vector direction per layer: {self.task}",
                         subtitle=self._subtitle(f"{self.contrast} contrast, {self.direction}; "
                                                 f"PC1 explains {self.explained_variance_ratio:.2f} of the variance"))


def _with_answers(batch: PromptBatch) -> PromptBatch:
    """``batch`` with every row's answer tokens appended; the query position becomes the last answer token."""
    lengths = batch.query_pos + 1
    total = [int(n) + len(a) for n, a in zip(lengths, batch.answer_ids)]
    width = max(total)
    tokens = torch.zeros((len(batch), width), dtype=torch.long)  # pad value is irrelevant: causal, read before it
    mask = torch.zeros_like(tokens)
    roles = torch.full_like(tokens, ROLE_ID["pad"])
    demo = torch.full_like(tokens, -1)
    for i, (n, ans) in enumerate(zip(lengths.tolist(), batch.answer_ids)):
        tokens[i, :n], tokens[i, n:total[i]] = batch.tokens[i, :n], torch.tensor(ans)
        mask[i, :total[i]] = 1
        roles[i, :n], roles[i, n:total[i]] = batch.roles[i, :n], ROLE_ID["answer_position"]
        demo[i, :n] = batch.demo_index[i, :n]
    return replace(batch, tokens=tokens, attention_mask=mask, roles=roles, demo_index=demo,
                   query_pos=torch.tensor(total) - 1)


@checked
def in_context_vector(
    model: ModelLike, task: Task | str, *, n: int = 32, contrast: Contrast = "pair", direction: Direction = "pc1",
    n_shots: int = 5, seed: int = 0, template: PromptTemplate | str | None = None,
    demos_from: Task | str | None = None, batch_size: int = 32,
) -> InContextVector:
    """The in-context vector of ``task`` from ``n`` demonstration pairs (PC1 of last-token differences)."""
    if contrast not in ("pair", "icl"):
        raise TlensICLError(f"contrast must be 'pair' or 'icl', got {contrast!r}.")
    if direction not in ("pc1", "pc1+mean"):
        raise TlensICLError(f"direction must be 'pc1' or 'pc1+mean', got {direction!r}.")
    negative = make_prompts(model, task, n=n, n_shots=0, seed=seed, template=template)
    if contrast == "pair":
        positive = _with_answers(negative)
    else:
        positive = make_prompts(model, task, n=n, n_shots=n_shots, seed=seed, template=template, demos_from=demos_from)
    if n < 2:
        raise TlensICLError("in_context_vector needs n >= 2 pairs for a principal direction.")
    diff = (query_residuals(model, positive, batch_size=batch_size)
            - query_residuals(model, negative, batch_size=batch_size))  # [n, layer, d_model]
    pc1, ratio = _principal_direction(diff)
    directions = pc1 + diff.mean(0) if direction == "pc1+mean" else pc1
    name = task if isinstance(task, str) else task.name
    return InContextVector(directions, diff.mean(0), ratio, name, contrast, direction,
                           run_info(model, method="in_context_vector", n=n, n_shots=n_shots, seed=seed))


def _principal_direction(diff: Float[Tensor, "n layer d_model"]) -> tuple[Tensor, float]:
    from sklearn.decomposition import PCA

    flat = diff.reshape(diff.shape[0], -1).double().numpy()
    pca = PCA(n_components=1).fit(flat)
    pc1 = torch.from_numpy(pca.components_[0]).float()
    if float(pc1 @ diff.reshape(diff.shape[0], -1).mean(0)) < 0:  # PCA's sign is arbitrary
        pc1 = -pc1
    return pc1.reshape(diff.shape[1:]), float(pca.explained_variance_ratio_[0])
