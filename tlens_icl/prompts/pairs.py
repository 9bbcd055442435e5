"""Sampling ICL episodes from a task and building clean/corrupted prompt pairs.

Corruptions (``CORRUPTIONS``), all seeded:

* ``shuffled_labels`` - demo outputs permuted among the demos (Todd et al.). Labels move among the
  labels of the same token length, so the pair stays aligned, and within such a group no demo keeps
  its label unless one label fills more than half of the group; a label whose token length no other
  label shares stays put. When that would change nothing, labels move among all demos (the pair is
  then not aligned). Raises when the prompt cannot change (fewer than 2 demos, or all demos show the
  same label). Uninformative when the output *type* reveals the task.
* ``random_labels`` - each demo output replaced by a random different output of the same task.
* ``other_task_labels`` - demo outputs replaced by another task's answers (``other_task=``).
* ``zero_shot`` - the query alone. Not position-aligned: only query-position analyses accept it.
* ``corrupted_query`` - the demos kept, the query replaced by another item (the answer changes).
* ``identity`` - corrupted == clean (for identity checks: every effect must be exactly zero).

Replacement labels are chosen with the same token length when possible so that clean and corrupted
prompts stay token-aligned (``PromptPairBatch.aligned``). A corruption never returns the clean prompt:
a row it could not change raises :class:`~tlens_icl.errors.PromptError` before any forward pass.

Queries are drawn without replacement (``n`` larger than the usable items raises), demonstrations are
distinct items with inputs different from the query's, and repeated or contradictory task items are
merged first (:meth:`~tlens_icl.tasks.Task.deduplicated`); ``PromptBatch.item_counts`` reports how many
items survived.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.errors import (
    EmptyTaskError,
    PairMismatchError,
    PromptError,
    TlensICLError,
)
from tlens_icl.models.adapter import ModelHandle, model_meta, resolved
from tlens_icl.prompts.batch import ROLE_ID, PromptBatch, collate, render
from tlens_icl.prompts.templates import PromptTemplate, get_template
from tlens_icl.tasks import Task, TaskItem, load_task

SingleToken = Literal["ignore", "filter", "require"]


@dataclass(frozen=True)
class Episode:
    """One prompt's content: demonstrations as (input, shown output) and the query item."""

    demos: tuple[tuple[str, str], ...]
    query: TaskItem


def default_template(model: ModelLike) -> PromptTemplate:
    """The model's own template (``arrow`` for embedded models), else Todd et al.'s ``qa``."""
    return _template(model_meta(model), None)


def _template(meta: dict[str, Any], template: PromptTemplate | str | None) -> PromptTemplate:
    """``template``, or (None) the template of the model whose :func:`~tlens_icl.models.adapter.model_meta` is ``meta``."""
    return get_template(template if template is not None else meta.get("default_template", "qa"))


# ---- item filtering --------------------------------------------------------------------------------
def _token_lengths(model: ModelLike, texts: Sequence[str]) -> list[int | None]:
    """Token count of each text (None when it contains unknown tokens)."""
    tok = model.tokenizer
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    unk = getattr(tok, "unk_token_id", None)
    return [None if (unk is not None and unk in x) or not x else len(x) for x in ids]


@checked(eval_mode=False)
@resolved
def usable_task(
    model: ModelLike | ModelHandle, task: Task | str, *, template: PromptTemplate | str | None = None,
    single_token: SingleToken = "ignore", report: bool = False,
) -> Task | tuple[Task, dict[str, Any]]:
    """The task restricted to items this model's tokenizer can represent.

    Repeated items are dropped and items giving one input several outputs merged
    (:meth:`~tlens_icl.tasks.Task.deduplicated`). Items with tokens unknown to the tokenizer are always
    dropped, with an :class:`~tlens_icl.errors.ItemsDroppedWarning` that gives the count and an example (not for
    the words an embedded model's card leaves out of a task it was trained on); a template whose own text holds
    unknown tokens raises :class:`~tlens_icl.errors.PromptError` naming the template. ``single_token="filter"`` also drops items whose answer is more than one token; ``"require"``
    raises instead. With ``report=True`` returns ``(task, counts)`` where counts has ``total``,
    ``duplicates``, ``conflicts`` (merged), ``unknown_tokens``, ``multi_token`` (dropped) and ``usable``.
    """
    task, counts = _usable(model, task, _template(model.meta, template), single_token)
    return (task, counts) if report else task


def _usable(model: ModelHandle, task: Task | str, tpl: PromptTemplate, single_token: SingleToken) -> tuple[Task, dict[str, Any]]:
    """:func:`usable_task` with its template resolved: ``(task, counts)``."""
    loaded = load_task(task)
    total = len(loaded)
    task, counts = loaded.deduplicated()
    meta = model.meta
    if single_token not in ("ignore", "filter", "require"):
        raise TlensICLError(f"single_token must be 'ignore', 'filter' or 'require', got {single_token!r}.")
    _check_template(model.tokenizer, tpl, meta)
    in_len = _token_lengths(model, [tpl.input_prefix + it.input for it in task.items])
    out_len = _token_lengths(model, [tpl.answer_prefix + it.output for it in task.items])
    unknown_items = [it for it, a, b in zip(task.items, in_len, out_len) if a is None or b is None]
    unknown = len(unknown_items)
    multi = [it for it, a, b in zip(task.items, in_len, out_len) if a is not None and b is not None and b > 1]
    if single_token == "require" and multi:
        ex = ", ".join(repr(it.output) for it in multi[:3])
        raise PromptError(
            f"Task {task.name!r} has {len(multi)} answers that are several tokens for this tokenizer (e.g. {ex}); "
            "pass single_token='filter' to keep only single-token answers."
        )
    keep = [
        it for it, a, b in zip(task.items, in_len, out_len)
        if a is not None and b is not None and (single_token == "ignore" or b == 1)
    ]
    counts = {"task": task.name, "total": total, **counts, "unknown_tokens": unknown,
              "multi_token": len(multi) if single_token == "filter" else 0, "usable": len(keep)}
    if not keep:
        raise EmptyTaskError(
            f"No item of task {task.name!r} is usable (representable) by this model: of {total} items, {unknown} contain tokens "
            f"unknown to the tokenizer and {counts['multi_token']} have multi-token answers (single_token={single_token!r})."
        )
    if len(keep) != len(task.items):
        task = Task(**{**task.__dict__, "items": tuple(keep)})
    if unknown_items and not _documented_pool(meta, task.name):  # a loss nobody asked for: say so
        _warn_dropped(task.name, counts, unknown_items, multi if single_token == "filter" else [])
    return task, counts


def _check_template(tok: Any, tpl: PromptTemplate, meta: dict[str, Any]) -> None:
    """Raise, naming the template, when its own text holds tokens unknown to the tokenizer ``tok`` (then every item
    would be dropped as "unknown", which points at the items rather than at the template); ``meta``: the model's
    :func:`~tlens_icl.models.adapter.model_meta`."""
    unk = getattr(tok, "unk_token_id", None)
    if unk is None:
        return
    parts = {"input_prefix": tpl.input_prefix, "input_suffix": tpl.input_suffix, "answer_prefix": tpl.answer_prefix,
             "separator": tpl.separator}
    bad = {k: v for k, v in parts.items() if v.strip() and unk in tok(v, add_special_tokens=False)["input_ids"]}
    if bad:
        name = meta.get("default_template")
        hint = f"; this model's own template is {name!r}" if name and name != tpl.name else ""
        raise PromptError(f"Template {tpl.name!r}: its {', '.join(f'{k} {v!r}' for k, v in bad.items())} "
                          f"contain{'s' if len(bad) == 1 else ''} tokens unknown to the model's tokenizer, so no "
                          f"prompt can be written with it. Pass another template (template=...){hint}.")


def _documented_pool(meta: dict[str, Any], name: str) -> bool:
    """True when an embedded model (``meta``: its :func:`~tlens_icl.models.adapter.model_meta`) drops, by design, the
    words of a task it was trained on that its word-level vocabulary lacks (its card defines the task's pool as the
    words it knows): no warning then."""
    trained = {t for names in (meta.get("families") or {}).values() for t in names}
    return name in trained


def _warn_dropped(name: str, counts: dict[str, Any], unknown: Sequence[TaskItem], multi: Sequence[TaskItem]) -> None:
    import sys
    import warnings
    from pathlib import Path

    from tlens_icl.errors import ItemsDroppedWarning

    parts = []
    if unknown:
        parts.append(f"{len(unknown)} contain tokens unknown to the model's tokenizer (e.g. {unknown[0].input!r} -> "
                     f"{unknown[0].output!r})")
    if multi:
        parts.append(f"{len(multi)} have answers of several tokens (e.g. {multi[0].output!r}; single_token='filter')")
    if counts["duplicates"]:
        parts.append(f"{counts['duplicates']} repeat another item")
    if counts["conflicts"]:
        parts.append(f"{counts['conflicts']} give an input a second output (merged as accepted alternatives)")
    warnings.warn(f"Task {name!r}: {counts['total'] - counts['usable']} of {counts['total']} items left out: "
                  f"{'; '.join(parts)}. {counts['usable']} items are used (usable_task(..., report=True) gives the "
                  "counts).", ItemsDroppedWarning, stacklevel=_caller_level(sys._getframe(0), Path(__file__).parents[1]))


def _caller_level(frame: Any, package: Any) -> int:
    """The ``stacklevel`` of the first frame outside ``package``: a warning points at the user's line."""
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(str(package)):
        frame, level = frame.f_back, level + 1
    return level


# ---- episodes --------------------------------------------------------------------------------------
def sample_episodes(task: Task, n: int, n_shots: int, seed: int | str, *, demo_pool: Task | None = None) -> list[Episode]:
    """``n`` episodes, each with a different query item and ``n_shots`` distinct demos (from ``demo_pool``,
    default the task itself) whose inputs differ from the query's.

    Queries are drawn without replacement and depend only on ``seed`` and the task, not on ``n_shots``,
    so shot sweeps compare the same query items.

    Raises:
        TlensICLError: ``n`` exceeds the task's items (queries would repeat and statistics would count
            one item several times), or too few demonstrations are available.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TlensICLError(f"n must be an int >= 1, got {n!r}.")
    if isinstance(n_shots, bool) or not isinstance(n_shots, int) or n_shots < 0:
        raise TlensICLError(f"n_shots must be an int >= 0, got {n_shots!r}.")
    if n > len(task):
        raise TlensICLError(
            f"Task {task.name!r} has {len(task)} usable items, fewer than the n={n} prompts asked for: queries "
            f"would repeat. Pass n <= {len(task)} (or add items)."
        )
    pool = demo_pool or task
    groups = pool.groups
    largest = max(len(v) for v in groups.values())
    if n_shots + (demo_pool is None) > largest:
        raise TlensICLError(
            f"Task {task.name!r} cannot supply {n_shots} demonstrations plus a query: its largest "
            f"{'group' if len(groups) > 1 else 'item set'} has {largest} items."
        )
    order = list(range(len(task)))
    random.Random(f"{seed}/{task.name}/queries").shuffle(order)
    rng = random.Random(f"{seed}/{task.name}/{n_shots}/demos")
    episodes = []
    for r in range(n):
        q = task.items[order[r]]
        members = [pool.items[i] for i in groups.get(q.group, []) if pool.items[i].input != q.input]
        if len(members) < n_shots:
            raise TlensICLError(f"Group {q.group!r} of task {task.name!r} has too few items for {n_shots} shots.")
        demos = rng.sample(members, n_shots)
        episodes.append(Episode(tuple((d.input, d.output) for d in demos), q))
    return episodes


# ---- corruptions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ctx:
    task: Task
    rng: random.Random
    length: Callable[[str], int | None]  # token length of a shown label
    other: Task | None


def _same_length_choice(ctx: _Ctx, candidates: Sequence[str], target: str, exclude: set[str]) -> str:
    pool = [c for c in candidates if c not in exclude]
    if not pool:
        return target
    same = [c for c in pool if ctx.length(c) == ctx.length(target)]
    return ctx.rng.choice(same or pool)


def _cyclic_shift(labels: Sequence[str], idx: Sequence[int], rng: random.Random) -> dict[int, int]:
    """Positions ``idx`` mapped to the position whose label they receive.

    Sorting the positions by label (random label order, random order within a label) and shifting by
    the largest label count ``m`` moves every label to a position with a different label when
    ``m <= len(idx) / 2``; otherwise only the majority label can stay put. With distinct labels this is
    a uniformly random cyclic permutation.
    """
    by_label: dict[str, list[int]] = {}
    for i in idx:
        by_label.setdefault(labels[i], []).append(i)
    blocks = list(by_label.values())
    rng.shuffle(blocks)
    for block in blocks:
        rng.shuffle(block)
    order = [i for block in blocks for i in block]
    m = max(len(b) for b in blocks)
    return {order[k]: order[(k + m) % len(order)] for k in range(len(order))}


def _shuffled(ep: Episode, ctx: _Ctx) -> Episode:
    labels = [y for _, y in ep.demos]
    if len(set(labels)) < 2:
        raise PromptError(
            f"shuffled_labels cannot change a prompt whose {len(labels)} demonstration(s) show "
            f"{'one label' if labels else 'no label'} ({sorted(set(labels))[:1]}): use at least 2 demonstrations "
            "with different labels, or corruption='random_labels'."
        )
    by_len: dict[Any, list[int]] = {}
    for i, y in enumerate(labels):
        by_len.setdefault(ctx.length(y), []).append(i)
    source = {i: i for i in range(len(labels))}
    for idx in by_len.values():  # labels move among labels of the same token length: the pair stays aligned
        if len({labels[i] for i in idx}) > 1:
            source.update(_cyclic_shift(labels, idx, ctx.rng))
    new = [labels[source[i]] for i in range(len(labels))]
    if new == labels:  # no two labels of one length differ: move them among all demos (not aligned)
        source = _cyclic_shift(labels, range(len(labels)), ctx.rng)
        new = [labels[source[i]] for i in range(len(labels))]
    return Episode(tuple((x, y) for (x, _), y in zip(ep.demos, new)), ep.query)


def _random(ep: Episode, ctx: _Ctx) -> Episode:
    outs = ctx.task.outputs
    answers = {it.input: set(it.answers) for it in ctx.task.items}
    demos = tuple((x, _same_length_choice(ctx, outs, y, answers.get(x, {y}))) for x, y in ep.demos)
    return Episode(demos, ep.query)


def _other_task(ep: Episode, ctx: _Ctx) -> Episode:
    if ctx.other is None:
        raise TlensICLError("corruption='other_task_labels' needs other_task=<task or name>.")
    lookup = {it.input: it.output for it in ctx.other.items}
    outs = ctx.other.outputs
    demos = tuple((x, lookup.get(x) or _same_length_choice(ctx, outs, y, {y})) for x, y in ep.demos)
    return Episode(demos, ep.query)


def _zero_shot(ep: Episode, ctx: _Ctx) -> Episode:
    return Episode((), ep.query)


def _corrupted_query(ep: Episode, ctx: _Ctx) -> Episode:
    used = {x for x, _ in ep.demos} | {ep.query.input}
    cands = [it for it in ctx.task.items if it.input not in used and it.output not in ep.query.answers
             and it.group == ep.query.group]
    if not cands:
        raise TlensICLError(f"Task {ctx.task.name!r} has no other query with a different answer.")
    same = [it for it in cands if ctx.length(it.input) == ctx.length(ep.query.input)]
    new_q = ctx.rng.choice(same or cands)
    return Episode(ep.demos, new_q)


def _identity(ep: Episode, ctx: _Ctx) -> Episode:
    return ep


CORRUPTIONS: dict[str, Callable[[Episode, _Ctx], Episode]] = {
    "shuffled_labels": _shuffled,
    "random_labels": _random,
    "other_task_labels": _other_task,
    "zero_shot": _zero_shot,
    "corrupted_query": _corrupted_query,
    "identity": _identity,
}


# ---- batches ---------------------------------------------------------------------------------------
def _accepted(model: ModelLike, tpl: PromptTemplate, text: str, item: TaskItem) -> tuple[tuple[int, ...], ...]:
    """Full token sequences of every accepted answer (output first), as the model would produce them."""
    from tlens_icl.prompts.batch import answer_token_ids

    return tuple(dict.fromkeys(tuple(answer_token_ids(model, text, tpl.answer_prefix + a)) for a in item.answers))


def build_batch(model: ModelLike, episodes: Sequence[Episode], tpl: PromptTemplate, *, prepend_bos: bool | None = None,
                item_counts: dict[str, Any] | None = None) -> PromptBatch:
    """Tokenize episodes into a :class:`PromptBatch` (``prepend_bos=None``: the model's default)."""
    rendered = [render(ep.demos, ep.query.input, ep.query.output, tpl) for ep in episodes]
    accepted = [_accepted(model, tpl, rp.text, ep.query) for rp, ep in zip(rendered, episodes)]
    return collate(model, rendered, [ep.query for ep in episodes], accepted, prepend_bos=prepend_bos,
                   item_counts=item_counts)


def _prepare(task: Task | str, model: ModelHandle, template: PromptTemplate | str | None, single_token: SingleToken,
             demos_from: Task | str | None) -> tuple[Task, PromptTemplate, Task | None, dict[str, Any]]:
    if getattr(model, "tokenizer", None) is None:
        raise PromptError("The model has no tokenizer; prompts cannot be built.")
    tpl = _template(model.meta, template)
    task, counts = _usable(model, task, tpl, single_token)
    pool = None
    if demos_from is not None:
        other = demos_from if isinstance(demos_from, str) else getattr(demos_from, "name", None)
        if other != task.name:
            raise PromptError(f"demos_from={other!r} is another task than {task.name!r}: demonstrations of one task "
                              "before a query of another would be scored as this task's ICL. demos_from takes a split "
                              "of the same task (task.split(...)[0]); to show another task's labels use "
                              "make_prompt_pairs(..., corruption='other_task_labels', other_task=...).")
        pool, pool_counts = _usable(model, demos_from, tpl, "ignore")
        counts = {**counts, "demo_pool": pool_counts}
    return task, tpl, pool, counts


@checked(eval_mode=False)
@resolved
def make_prompts(
    model: ModelLike | ModelHandle, task: Task | str, *, n: int = 32, n_shots: int = 10, seed: int = 0,
    template: PromptTemplate | str | None = None, single_token: SingleToken = "ignore",
    demos_from: Task | str | None = None, prepend_bos: bool | None = None,
) -> PromptBatch:
    """``n`` clean ICL prompts with ``n_shots`` demonstrations each. Same seed -> identical prompts.

    ``prepend_bos``: start every prompt with the BOS token; None (default) follows the model
    (``model.cfg.default_prepend_bos``: TransformerLens's True, or the converted GGUF's own tokenizer
    rule, False for SmolLM2). The choice is recorded on the batch (``batch.prepend_bos``).
    """
    task, tpl, pool, counts = _prepare(task, model, template, single_token, demos_from)
    return build_batch(model, sample_episodes(task, n, n_shots, seed, demo_pool=pool), tpl,
                       prepend_bos=prepend_bos, item_counts=counts)


@dataclass(frozen=True)
class PromptPairBatch:
    """Clean and corrupted prompts, row-aligned, with provenance.

    ``clean.answer_tokens`` is the target of the clean prompt. For label corruptions the corrupted
    prompt has the same query, so ``corrupted.answer_tokens`` equals it; for ``corrupted_query`` it is
    the new query's answer.
    """

    clean: PromptBatch
    corrupted: PromptBatch
    task: str
    n_shots: int
    corruption: str
    seed: int
    template: str

    def __post_init__(self) -> None:
        if len(self.clean) != len(self.corrupted):
            raise PairMismatchError(f"{len(self.clean)} clean rows but {len(self.corrupted)} corrupted rows.")
        unrelated = self.unrelated_rows()
        if unrelated:
            raise PairMismatchError(
                f"Pairs {unrelated[:5]} are unrelated: the corrupted prompt shares neither the query nor the "
                "demonstrations of its clean prompt (every corruption keeps one of them), so patching between them "
                "measures nothing about the corruption. Build pairs with make_prompt_pairs.")

    def unrelated_rows(self) -> list[int]:
        """Rows whose clean and corrupted prompts share neither the query's tokens nor the demonstrations' tokens
        (only checked where token roles mark them; pairs from raw strings are taken as given)."""
        q, demo = ROLE_ID["query_input"], (ROLE_ID["demo_input"], ROLE_ID["demo_output"])
        c, k = self.clean, self.corrupted
        cq, kq = c.roles == q, k.roles == q
        if not (bool(cq.any(1).all()) and bool(kq.any(1).all())):
            return []
        cd = (c.roles == demo[0]) | (c.roles == demo[1])
        kd = (k.roles == demo[0]) | (k.roles == demo[1])
        bad = []
        for i in range(len(c)):
            same_query = torch.equal(c.tokens[i][cq[i]], k.tokens[i][kq[i]])
            same_demos = torch.equal(c.tokens[i][cd[i]], k.tokens[i][kd[i]])  # (0-shot pairs: both empty)
            if not (same_query or same_demos):
                bad.append(i)
        return bad

    def __len__(self) -> int:
        return len(self.clean)

    @property
    def answer_tokens(self) -> Int[Tensor, " batch"]:
        return self.clean.answer_tokens

    @property
    def prepend_bos(self) -> bool:
        """Whether every clean and corrupted prompt starts with the BOS token."""
        return self.clean.prepend_bos

    @property
    def item_counts(self) -> dict[str, Any] | None:
        """How many items of the task survived tokenization and filtering."""
        return self.clean.item_counts

    @property
    def aligned(self) -> bool:
        """True when every clean row and its corrupted row have identical length and token roles."""
        c, k = self.clean, self.corrupted
        return c.tokens.shape == k.tokens.shape and bool(torch.equal(c.roles, k.roles))

    def require_aligned(self, operation: str) -> None:
        if not self.aligned:
            raise PairMismatchError(
                f"{operation} needs clean and corrupted prompts of identical token length and roles, but this "
                f"batch (corruption={self.corruption!r}) is not aligned. Patch at position='query' instead, or "
                "use single_token='filter' so replacement labels keep their length."
            )

    def select(self, index: Any) -> "PromptPairBatch":
        return PromptPairBatch(self.clean.select(index), self.corrupted.select(index), self.task,
                               self.n_shots, self.corruption, self.seed, self.template)

    @classmethod
    def from_prompts(
        cls, model: ModelLike, clean_prompts: Sequence[str], corrupted_prompts: Sequence[str],
        answers: Sequence[str], corrupted_answers: Sequence[str] | None = None, *, task: str = "custom",
        prepend_bos: bool | None = None,
    ) -> "PromptPairBatch":
        """Pairs from raw strings (roles: BOS, answer position, everything else 'separator').

        ``answers`` are continuations exactly as the model should produce them (e.g. ``" Paris"``).
        ``prepend_bos=None`` follows the model's default.

        Raises:
            PairMismatchError: when a clean and corrupted prompt differ in token length.
        """
        corrupted_answers = corrupted_answers or answers
        if not (len(clean_prompts) == len(corrupted_prompts) == len(answers) == len(corrupted_answers)):
            raise PairMismatchError("clean_prompts, corrupted_prompts and answers must have the same length.")
        lc = _token_lengths(model, clean_prompts)
        lk = _token_lengths(model, corrupted_prompts)
        bad = [i for i, (a, b) in enumerate(zip(lc, lk)) if a != b]
        if bad:
            i = bad[0]
            raise PairMismatchError(
                f"Pair {i}: clean prompt has {lc[i]} tokens but corrupted has {lk[i]}: "
                f"{clean_prompts[i]!r} vs {corrupted_prompts[i]!r}."
            )
        sides = []
        for prompts, ans in ((clean_prompts, answers), (corrupted_prompts, corrupted_answers)):
            rendered = [_raw_render(p, a) for p, a in zip(prompts, ans)]
            queries = [TaskItem(" ".join(p.split()) or "?", " ".join(a.split()) or "?") for p, a in zip(prompts, ans)]
            sides.append(collate(model, rendered, queries, prepend_bos=prepend_bos))
        return cls(sides[0], sides[1], task, -1, "custom", -1, "raw")


def _raw_render(prompt: str, answer: str):
    from tlens_icl.prompts.batch import RenderedPrompt

    n = len(prompt)
    return RenderedPrompt(prompt, (ROLE_ID["separator"],) * n, (-1,) * n, answer)


@checked(eval_mode=False)
@resolved
def make_prompt_pairs(
    model: ModelLike | ModelHandle, task: Task | str, *, n: int = 32, n_shots: int = 10,
    corruption: str = "shuffled_labels", seed: int = 0, template: PromptTemplate | str | None = None,
    single_token: SingleToken = "ignore", other_task: Task | str | None = None,
    demos_from: Task | str | None = None, prepend_bos: bool | None = None,
) -> PromptPairBatch:
    """Clean/corrupted ICL prompt pairs for ``task`` tokenized for ``model``.

    Args:
        task: a task name or :class:`~tlens_icl.tasks.Task`.
        n: number of pairs; n_shots: demonstrations per clean prompt.
        corruption: one of :data:`CORRUPTIONS`.
        seed: same seed -> identical prompts.
        template: defaults to the model's own template (``arrow`` for embedded models) else ``qa``.
        single_token: ``"filter"`` keeps only items whose answer is one token; ``"require"`` raises.
        other_task: the label source for ``other_task_labels``.
        demos_from: draw demonstrations from this task (e.g. a train split) and queries from ``task``.
        prepend_bos: start every prompt with BOS; None follows the model (see :func:`make_prompts`).

    Raises:
        PromptError: a corruption that would leave some row identical to its clean prompt.
    """
    if corruption not in CORRUPTIONS:
        raise TlensICLError(f"Unknown corruption {corruption!r}; choose one of {sorted(CORRUPTIONS)}.")
    task, tpl, pool, counts = _prepare(task, model, template, single_token, demos_from)
    other = _usable(model, other_task, tpl, "ignore")[0] if other_task is not None else None
    clean_eps = sample_episodes(task, n, n_shots, seed, demo_pool=pool)
    lengths: dict[str, int | None] = {}

    def length(label: str) -> int | None:
        if label not in lengths:
            lengths[label] = _token_lengths(model, [tpl.answer_prefix + label])[0]
        return lengths[label]

    ctx = _Ctx(task, random.Random(f"{seed}/{task.name}/{n_shots}/{corruption}"), length, other)
    corrupted_eps = [CORRUPTIONS[corruption](ep, ctx) for ep in clean_eps]
    same = [i for i, (a, b) in enumerate(zip(clean_eps, corrupted_eps)) if a == b]
    if same and corruption != "identity":
        ep = clean_eps[same[0]]
        raise PromptError(
            f"corruption={corruption!r} left {len(same)} of {n} prompts of task {task.name!r} unchanged (e.g. row "
            f"{same[0]}, query {ep.query.input!r}, demo labels {[y for _, y in ep.demos][:5]}): no replacement "
            "label was available. Use more shots, another corruption, or a task with more distinct outputs."
        )
    return PromptPairBatch(
        clean=build_batch(model, clean_eps, tpl, prepend_bos=prepend_bos, item_counts=counts),
        corrupted=build_batch(model, corrupted_eps, tpl, prepend_bos=prepend_bos, item_counts=counts),
        task=task.name, n_shots=n_shots, corruption=corruption, seed=seed, template=tpl.name,
    )
