"""Token-loss in-context-learning score (Olsson et al. 2022): loss late in the context minus loss early.

``score = mean loss at a late context position - mean loss at an early one``; negative = the model
predicts better with more context (more in-context learning). Olsson et al. use tokens 500 and 50 of
512-token contexts; Yin & Steinhardt report ``loss@50 - loss@500`` (the opposite sign).

Two kinds of data, one result:

* ``"text"`` - chunks of natural text (``texts=``, default: the English reference text of the
  Python documentation shipped with every Python, ``pydoc_data.topics``), loss per token position;
* ``"episodes"`` - ICL prompts of ``tasks`` with the answer appended, loss of the first token of each
  demonstration's output (the "position" is the demonstration index; the last is the query's answer).
  This is the data of word-level models such as the embedded ``icl-tiny`` that cannot read prose.

``data="auto"`` takes text when the tokenizer represents the text (under 1 % unknown tokens), else episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tlens_icl._typing import Head, ModelLike
from tlens_icl._validate import checked, integer
from tlens_icl.engine.ablation import ablated_token_loss_sweep, mean_head_z, token_positions
from tlens_icl.errors import PromptError, TlensICLError
from tlens_icl.models.adapter import model_meta, model_tasks
from tlens_icl.prompts.batch import ROLE_ID
from tlens_icl.prompts.pairs import make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.results.base import Result, run_info
from tlens_icl.tasks import Task

DataKind = Literal["auto", "text", "episodes"]


@dataclass(frozen=True)
class LossData:
    """Token sequences for the token-loss score and, per row, the loss positions to read.

    ``read[i, j]`` is the position whose next-token loss is "context position ``j``" of row ``i``
    (-1 = row ``i`` has no position ``j``).
    """

    tokens: Int[Tensor, "row pos"]
    mask: Int[Tensor, "row pos"]
    read: Int[Tensor, "row slot"]
    kind: str
    axis: str  # "token position" or "demonstration"

    def losses(self, model: ModelLike, heads: Sequence[Head] = (), means: Tensor | None = None, *,
               batch_size: int = 8) -> Float[Tensor, "row slot"]:
        """Next-token loss at every read position, with ``heads`` mean-ablated (``means`` as in :meth:`losses_of_sets`)."""
        return self.losses_of_sets(model, [heads], means, batch_size=batch_size)[0]

    def losses_of_sets(self, model: ModelLike, head_sets: Sequence[Sequence[Head]], means: Tensor | None = None, *,
                       batch_size: int = 8, method: Any = "auto") -> list[Float[Tensor, "row slot"]]:
        """:meth:`losses` for each head set, sharing each chunk's clean run (``engine.ablation.ablation_sweep``).

        ``means``: what an ablated head's ``hook_z`` is set to (``[layer, head, d_head]``); None: its mean over this
        data's own tokens (BOS excluded)."""
        if means is None and any(head_sets):
            bos = getattr(model.tokenizer, "bos_token_id", None)
            means = mean_head_z(model, self.tokens, token_positions(self.tokens, self.mask, bos), batch_size=batch_size)
        means_ = means if means is not None else torch.zeros(model.cfg.n_layers, model.cfg.n_heads, 1)
        ok = self.read >= 0
        rows = torch.arange(len(self.read))[:, None].expand_as(self.read)
        result = []
        for per_token in ablated_token_loss_sweep(model, self.tokens, self.mask, head_sets, means_, batch_size=batch_size,
                                                  method=method):
            out = torch.full(self.read.shape, float("nan"))
            out[ok] = per_token[rows[ok], self.read[ok]]
            result.append(out)
        return result

    @property
    def window(self) -> tuple[int, int]:
        """The early and late positions of the score (:func:`default_window`)."""
        return default_window(self)

    def ablation_scores(self, model: ModelLike, head_sets: Sequence[Sequence[Head]], means: Tensor | None = None, *,
                        batch_size: int = 8, method: Any = "auto") -> list[Float[Tensor, " row"]]:
        """Each row's score (:func:`loss_score` over :attr:`window`; negative = in-context learning) with each head
        set mean-ablated (``means`` as in :meth:`losses_of_sets`: default this data's own)."""
        early, late = self.window
        return [loss_score(losses, early, late)
                for losses in self.losses_of_sets(model, head_sets, means, batch_size=batch_size, method=method)]


def python_docs_text() -> str:
    """English prose shipped with Python: the reference topics of ``pydoc`` (about 460k characters)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def text_data(model: ModelLike, texts: Sequence[str] | None = None, *, n: int = 16, length: int = 128,
              seed: int = 0) -> LossData:
    """``n`` chunks of ``length`` tokens (after a BOS, if the model has one) cut at random offsets from ``texts``."""
    tok = model.tokenizer
    bos = tok.bos_token_id if getattr(model.cfg, "default_prepend_bos", True) else None
    body = length - (bos is not None)
    ids: list[int] = []
    for t in texts if texts is not None else [python_docs_text()]:
        ids += tok(t, add_special_tokens=False)["input_ids"]
    if len(ids) < body + 1:
        raise TlensICLError(f"The text has {len(ids)} tokens; a {length}-token chunk needs more.")
    if length > model.cfg.n_ctx:
        raise TlensICLError(f"length {length} exceeds n_ctx {model.cfg.n_ctx}.")
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and ids.count(unk) > 0.01 * len(ids):
        raise PromptError(f"{ids.count(unk) / len(ids):.0%} of the text is unknown to this tokenizer; pass texts= "
                          "the model can read, or use data='episodes'.")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randperm(len(ids) - body, generator=gen)[:n].tolist()
    rows = [([bos] if bos is not None else []) + ids[s:s + body] for s in starts]
    tokens = torch.tensor(rows)
    read = torch.arange(length - 1).expand(len(rows), -1).clone()
    return LossData(tokens, torch.ones_like(tokens), read, "text", "token position")


def episode_data(model: ModelLike, tasks: Sequence[Task | str], *, n: int = 16, n_shots: int = 10, seed: int = 0,
                 template: PromptTemplate | str | None = None) -> LossData:
    """ICL prompts of every task with the answer appended; read the first output token of each demonstration."""
    rows, reads = [], []
    for task in tasks:
        batch = make_prompts(model, task, n=n, n_shots=n_shots, seed=seed, template=template)
        for i in range(len(batch)):
            q = int(batch.query_pos[i])
            row = batch.tokens[i, : q + 1].tolist() + [batch.answer_ids[i][0]]
            first = [int(((batch.roles[i] == ROLE_ID["demo_output"]) & (batch.demo_index[i] == d)).nonzero()[0])
                     for d in range(n_shots)]
            rows.append(row)
            reads.append([p - 1 for p in first] + [q])
    width = max(len(r) for r in rows)
    if width > model.cfg.n_ctx:
        raise PromptError(f"{n_shots}-shot episodes of {width} tokens exceed n_ctx {model.cfg.n_ctx}; use fewer shots.")
    pad = model.tokenizer.pad_token_id or 0
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return LossData(tokens, mask, torch.tensor(reads), "episodes", "demonstration")


def loss_data(model: ModelLike, data: DataKind | LossData = "auto", *, texts: Sequence[str] | None = None,
              tasks: Sequence[Task | str] | None = None, n: int = 16, length: int = 128, n_shots: int = 10,
              seed: int = 0, template: PromptTemplate | str | None = None) -> LossData:
    """The sequences of the token-loss score (see the module docstring for ``data``)."""
    if isinstance(data, LossData):
        return data
    if data not in ("auto", "text", "episodes"):
        raise TlensICLError(f"data must be 'auto', 'text', 'episodes' or a LossData, got {data!r}.")
    # the score compares an early and a late position: text needs >= 3 loss positions after BOS, episodes 2 demos
    integer(length, "length", minimum=4, where="token loss: ")
    integer(n_shots, "n_shots", minimum=1, where="token loss: ")
    if data in ("auto", "text"):
        try:
            return text_data(model, texts, n=n, length=min(length, int(model.cfg.n_ctx)), seed=seed)
        except PromptError:
            if data == "text":
                raise
    if tasks is None:
        tasks = model_tasks(model)
    if isinstance(tasks, (str, Task)) or not tasks:
        raise TlensICLError(f"token loss on episodes needs a non-empty list of tasks, got {tasks!r}.")
    per_task = max(1, -(-n // len(tasks)))
    return episode_data(model, tasks, n=per_task, n_shots=n_shots, seed=seed, template=template)


def default_window(data: LossData) -> tuple[int, int]:
    """Olsson's early/late positions scaled to the data: about 10 % and the last position every row has."""
    have = (data.read >= 0).all(0).nonzero().flatten()
    last = int(have.max())
    if data.axis == "demonstration":
        return 0, last
    return max(1, round(0.1 * (last + 1))), last


def loss_score(losses: Float[Tensor, "row slot"], early: int, late: int) -> Float[Tensor, " row"]:
    """Per-row ``loss[late] - loss[early]`` (negative = in-context learning)."""
    return losses[:, late] - losses[:, early]


@dataclass(frozen=True)
class TokenLossResult(Result):
    """Next-token loss per context position and the Olsson score ``loss[late] - loss[early]`` (negative = ICL)."""

    losses: Float[Tensor, "row slot"]
    early: int
    late: int
    data: str
    axis: str
    info: dict[str, Any]

    title = "Token-loss ICL score"
    measured = ("losses",)

    def curve(self) -> Float[Tensor, " slot"]:
        return self.losses.nanmean(0)

    def score(self) -> float:
        return float(loss_score(self.losses, self.early, self.late).nanmean())

    def ci(self, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
        from tlens_icl.results.heads import bootstrap_ci

        lo, hi = bootstrap_ci(loss_score(self.losses, self.early, self.late)[None], confidence=confidence,
                              n_resamples=n_resamples, seed=seed)
        return float(lo), float(hi)

    def summary(self) -> str:
        lo, hi = self.ci()
        c = self.curve()
        return (f"{self.title} ({self.data}): loss[{self.late}] - loss[{self.early}] = {self.score():.3f} "
                f"[{lo:.3f}, {hi:.3f}] ({float(c[self.late]):.3f} - {float(c[self.early]):.3f}; {len(self.losses)} rows)")

    def to_dataframe(self) -> Any:
        import pandas as pd

        c = self.curve()
        n = (~self.losses.isnan()).sum(0)
        return pd.DataFrame({"position": range(len(c)), "loss": c.numpy(), "n": n.numpy()})

    def plot(self, ax: Any = None) -> Any:
        from tlens_icl.viz.plots import line_plot

        c = self.curve()
        lo, hi = self.ci()
        score = self.score()
        interval = f"{score:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]"
        if lo <= 0.0 <= hi:  # the interval cannot tell ICL from none: the title says so, not the point estimate
            title = f"{self.title}: undecided (the interval includes 0)"
        else:
            title = f"{self.title}: {'loss falls' if score < 0 else 'loss rises'} later in the context"
        n_rows = int(self.losses.shape[0])
        return line_plot(range(len(c)), {"mean loss": c.tolist()}, xlabel=self.axis, ylabel="next-token loss (nats)",
                         title=title, ax=ax, marks=[(self.early, f"early position {self.early}"),
                                                    (self.late, f"late position {self.late}")],
                         subtitle=self._subtitle(f"score = loss[{self.late}] - loss[{self.early}] = {interval} "
                                                 f"(bootstrap over rows; negative = in-context learning)",
                                                 f"n={n_rows} rows of {self.data}"))


@checked
def token_loss_score(
    model: ModelLike, data: DataKind | LossData = "auto", *, texts: Sequence[str] | None = None,
    tasks: Sequence[Task | str] | None = None, n: int = 16, length: int = 128, n_shots: int = 10,
    early: int | None = None, late: int | None = None, seed: int = 0, template: PromptTemplate | str | None = None,
    batch_size: int = 8,
) -> TokenLossResult:
    """Olsson et al.'s token-loss ICL score of ``model`` (negative = loss falls with context).

    Args:
        data: ``"text"``, ``"episodes"``, ``"auto"`` or a :class:`LossData` (see the module docstring).
        early, late: the context positions compared (default :func:`default_window`).
    """
    d = loss_data(model, data, texts=texts, tasks=tasks, n=n, length=length, n_shots=n_shots, seed=seed,
                  template=template)
    e, l_ = default_window(d)
    early, late = (e if early is None else early), (l_ if late is None else late)
    if not 0 <= early < late < d.read.shape[1]:
        raise TlensICLError(f"Need 0 <= early < late < {d.read.shape[1]}, got early={early}, late={late}.")
    return TokenLossResult(losses=d.losses(model, batch_size=batch_size), early=early, late=late, data=d.kind,
                           axis=d.axis, info=run_info(model, seed=seed, n=len(d.tokens),
                                                      model_name=model_meta(model).get("name")))


__all__ = ["LossData", "TokenLossResult", "default_window", "episode_data", "loss_data", "loss_score",
           "python_docs_text", "text_data", "token_loss_score"]
