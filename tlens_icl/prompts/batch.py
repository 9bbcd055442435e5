"""Rendering ICL prompts with token roles, and tokenizing them into a :class:`PromptBatch`.

Every token carries a role (``ROLES``) and the index of the demonstration it belongs to, computed
from character spans and the tokenizer's offset mapping, so analyses can select "all demonstration
outputs" or "the query input" for any tokenizer. The answer is read at ``query_pos`` (the last real
token of each row) - never ``[:, -1]``, which is wrong for right-padded rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl.errors import PromptError
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.tasks import TaskItem

#: ``answer`` marks answer tokens appended for teacher-forced scoring (:meth:`PromptBatch.with_answers`).
ROLES = ("pad", "bos", "separator", "demo_input", "demo_output", "query_input", "answer_position", "answer")
ROLE_ID = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    char_roles: tuple[int, ...]
    char_demo: tuple[int, ...]
    answer: str  # what the model should continue with (answer_prefix + output)


def render(demos: Sequence[tuple[str, str]], query: str, answer: str, template: PromptTemplate) -> RenderedPrompt:
    """Render demos + query, tagging every character with its role and demo index."""
    parts: list[tuple[str, int, int]] = []
    sep, struct = template.separator, ROLE_ID["separator"]
    for i, (x, y) in enumerate(demos):
        parts += [(template.input_prefix, struct, i), (x, ROLE_ID["demo_input"], i), (template.input_suffix, struct, i)]
        parts += [(template.answer_prefix + y, ROLE_ID["demo_output"], i), (sep, struct, -1)]
    parts += [(template.input_prefix, struct, -1), (query, ROLE_ID["query_input"], -1), (template.input_suffix, struct, -1)]
    text = "".join(p for p, _, _ in parts)
    roles = tuple(r for p, r, _ in parts for _ in p)
    demo = tuple(d for p, _, d in parts for _ in p)
    return RenderedPrompt(text, roles, demo, template.answer_prefix + answer)


def _tokenizer(model: ModelLike) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise PromptError("The model has no tokenizer; pass a bridge built with tokenizer=... to build prompts.")
    if not getattr(tok, "is_fast", False):
        raise PromptError("tlens_icl needs a fast (Rust) Hugging Face tokenizer for token-role offsets.")
    return tok


def _encode(tok: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def answer_token_ids(model: ModelLike, prompt_text: str, answer: str) -> list[int]:
    """Token ids of ``answer`` as the model would produce them after ``prompt_text``."""
    tok = _tokenizer(model)
    ids_prompt, _ = _encode(tok, prompt_text)
    ids_full, _ = _encode(tok, prompt_text + answer)
    if ids_full[: len(ids_prompt)] == ids_prompt and len(ids_full) > len(ids_prompt):
        return ids_full[len(ids_prompt) :]
    return _encode(tok, answer)[0]  # the answer merged with the prompt's last token: tokenize it alone


def resolve_prepend_bos(model: ModelLike, prepend_bos: bool | None) -> bool:
    """``prepend_bos``, or the model's default when None (``model.cfg.default_prepend_bos``, TransformerLens's flag).

    TransformerLens prepends BOS to every model by default; ``load_model`` sets the flag from the
    tokenizer's own convention for converted GGUF models (SmolLM2: no BOS).
    """
    if prepend_bos is None:
        return bool(getattr(getattr(model, "cfg", None), "default_prepend_bos", True))
    if not isinstance(prepend_bos, bool):
        raise PromptError(f"prepend_bos must be True, False or None (the model's default), got {prepend_bos!r}.")
    return prepend_bos


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: list[int]
    roles: list[int]
    demo: list[int]
    answer_ids: list[int]


def tokenize(model: ModelLike, rp: RenderedPrompt, *, prepend_bos: bool = True) -> TokenizedPrompt:
    tok = _tokenizer(model)
    ids, offsets = _encode(tok, rp.text)
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and unk in ids:
        raise PromptError(f"Prompt contains tokens unknown to the tokenizer: {rp.text[:80]!r}")
    for special in (tok.pad_token_id, tok.bos_token_id):
        if special is not None and special in ids:
            raise PromptError(f"Prompt text contains the pad/BOS token (id {special}); remove it: {rp.text[:80]!r}")
    roles, demo = [], []
    for s, e in offsets:
        span = rp.text[s:e]
        j = s + next((k for k, ch in enumerate(span) if not ch.isspace()), 0)  # first visible char decides
        j = min(j, len(rp.text) - 1)
        roles.append(rp.char_roles[j])
        demo.append(rp.char_demo[j])
    roles[-1] = ROLE_ID["answer_position"]
    if prepend_bos and tok.bos_token_id is not None:
        ids, roles, demo = [tok.bos_token_id, *ids], [ROLE_ID["bos"], *roles], [-1, *demo]
    ans = answer_token_ids(model, rp.text, rp.answer)
    if unk is not None and unk in ans:
        raise PromptError(f"Answer {rp.answer!r} contains tokens unknown to the tokenizer.")
    return TokenizedPrompt(ids, roles, demo, ans)


class PromptTexts(list):  # noqa: FURB189 - a list on purpose: TransformerLens accepts lists of strings
    """The prompts of a batch: a read-only ``list`` of strings, so ``model.run_with_cache(batch.prompts)`` and other
    TransformerLens calls that take ``str | list[str]`` accept it. It compares equal to a list or tuple of the same
    strings and hashes like a tuple; changing it raises (the batch's tokens were built from these texts)."""

    def __init__(self, texts: Sequence[str] = ()) -> None:
        super().__init__(texts)

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("PromptBatch.prompts is read-only (the tokens were built from these texts); copy it with "
                        "list(batch.prompts) to edit.")

    append = extend = insert = remove = pop = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, tuple)) and list(self) == list(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PromptTexts({list.__repr__(self)})"


@dataclass(frozen=True)
class PromptBatch:
    """Right-padded token batch of ICL prompts with per-token roles and the answer to each.

    ``query_pos[i]`` is the position whose logits predict the answer of row ``i``.
    ``answer_ids[i]`` are the tokens of row ``i``'s answer (``answer_tokens[i]`` is the first of them).
    ``accepted[i]`` holds the full token sequence of every accepted answer, the output first, then
    its alternatives (scoring matches whole sequences, never an alternative's first token alone).
    ``prepend_bos`` records whether a BOS token starts every row; ``item_counts`` how many items of
    the task survived tokenization and filtering (:func:`~tlens_icl.prompts.pairs.usable_task`) and ``task``
    the task's name. ``prompts`` is a read-only list (:class:`PromptTexts`): TransformerLens calls accept it.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    query_pos: Int[Tensor, " batch"]
    roles: Int[Tensor, "batch pos"]
    demo_index: Int[Tensor, "batch pos"]
    answer_tokens: Int[Tensor, " batch"]
    prompts: Sequence[str]
    answers: tuple[str, ...]
    answer_ids: tuple[tuple[int, ...], ...]
    accepted: tuple[tuple[tuple[int, ...], ...], ...]
    queries: tuple[TaskItem, ...]
    prepend_bos: bool = True
    item_counts: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompts, PromptTexts):
            object.__setattr__(self, "prompts", PromptTexts(self.prompts))
        b = self.tokens.shape[0]
        for f in ("attention_mask", "roles", "demo_index"):
            if getattr(self, f).shape != self.tokens.shape:
                raise PromptError(f"PromptBatch.{f} shape {tuple(getattr(self, f).shape)} != tokens {tuple(self.tokens.shape)}")
        if not (len(self.prompts) == len(self.answers) == len(self.accepted) == self.query_pos.shape[0] == b):
            raise PromptError("PromptBatch fields disagree on the batch size.")
        for i, (ans, acc) in enumerate(zip(self.answer_ids, self.accepted)):
            if not ans or not acc or tuple(acc[0]) != tuple(ans) or any(not a for a in acc):
                raise PromptError(f"PromptBatch row {i}: accepted[0] must be the answer's full token sequence.")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def task(self) -> str | None:
        """The name of the task the prompts were made from (None for a batch built by hand)."""
        return (self.item_counts or {}).get("task")

    @property
    def distinct_queries(self) -> int:
        """Number of different query items (equal to ``len(self)``: queries are drawn without replacement)."""
        return len(set(self.queries))

    def mask(self, role: str) -> Bool[Tensor, "batch pos"]:
        """Boolean mask of the tokens with ``role`` (one of :data:`ROLES`)."""
        if role not in ROLE_ID:
            raise PromptError(f"Unknown role {role!r}; roles are {ROLES}.")
        return self.roles == ROLE_ID[role]

    def select(self, index: Any) -> "PromptBatch":
        """Rows ``index`` (slice, list or tensor), trimmed to their longest row."""
        idx = torch.arange(len(self))[index] if not isinstance(index, Tensor) else index
        idx = idx.reshape(-1)
        width = int(self.attention_mask[idx].sum(1).max())
        pick = lambda seq: tuple(seq[int(i)] for i in idx)  # noqa: E731
        return PromptBatch(
            tokens=self.tokens[idx, :width],
            attention_mask=self.attention_mask[idx, :width],
            query_pos=self.query_pos[idx],
            roles=self.roles[idx, :width],
            demo_index=self.demo_index[idx, :width],
            answer_tokens=self.answer_tokens[idx],
            prompts=pick(self.prompts),
            answers=pick(self.answers),
            answer_ids=pick(self.answer_ids),
            accepted=pick(self.accepted),
            queries=pick(self.queries),
            prepend_bos=self.prepend_bos,
            item_counts=self.item_counts,
        )

    def with_answers(self, answers: Sequence[Sequence[int]] | None = None) -> "PromptBatch":
        """The prompts with an answer's tokens appended after each query (teacher forcing), right-padded.

        ``answers[i]`` defaults to row ``i``'s own answer (``answer_ids[i]``). ``query_pos`` is unchanged,
        so the logits at ``query_pos + k`` predict answer token ``k``; appended tokens have role ``answer``.
        """
        answers = [tuple(a) for a in (self.answer_ids if answers is None else answers)]
        if len(answers) != len(self) or any(not a for a in answers):
            raise PromptError(f"with_answers needs one non-empty token sequence per row ({len(self)} rows).")
        lengths = (self.query_pos + 1).tolist()
        width = max(n + len(a) for n, a in zip(lengths, answers))
        pads = self.tokens[self.attention_mask == 0]
        pad = int(pads[0]) if pads.numel() else 0  # pads follow every real token: their value never matters
        tokens = torch.full((len(self), width), pad, dtype=self.tokens.dtype)
        mask = torch.zeros((len(self), width), dtype=self.attention_mask.dtype)
        roles = torch.full((len(self), width), ROLE_ID["pad"], dtype=self.roles.dtype)
        demo = torch.full((len(self), width), -1, dtype=self.demo_index.dtype)
        for i, (n, a) in enumerate(zip(lengths, answers)):
            tokens[i, :n], roles[i, :n], demo[i, :n] = self.tokens[i, :n], self.roles[i, :n], self.demo_index[i, :n]
            tokens[i, n : n + len(a)] = torch.tensor(a, dtype=self.tokens.dtype)
            roles[i, n : n + len(a)] = ROLE_ID["answer"]
            mask[i, : n + len(a)] = 1
        return PromptBatch(tokens=tokens, attention_mask=mask, query_pos=self.query_pos.clone(), roles=roles,
                           demo_index=demo, answer_tokens=self.answer_tokens, prompts=self.prompts,
                           answers=self.answers, answer_ids=self.answer_ids, accepted=self.accepted,
                           queries=self.queries, prepend_bos=self.prepend_bos, item_counts=self.item_counts)

    def to(self, device: Any) -> "PromptBatch":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return PromptBatch(**{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in kw.items()})

    def str_tokens(self, model: ModelLike, row: int = 0) -> list[str]:
        n = int(self.attention_mask[row].sum())
        return [model.tokenizer.decode([t]) for t in self.tokens[row, :n].tolist()]


def collate(model: ModelLike, rendered: Sequence[RenderedPrompt], queries: Sequence[TaskItem],
            accepted: Sequence[Sequence[Sequence[int]]] | None = None, *, prepend_bos: bool | None = None,
            item_counts: dict[str, Any] | None = None) -> PromptBatch:
    """Tokenize rendered prompts into a right-padded :class:`PromptBatch`; checks the context length.

    ``accepted[i]``: token sequences of row ``i``'s accepted answers; the answer's own tokens always come
    first (added when missing).
    """
    tok = _tokenizer(model)
    prepend_bos = resolve_prepend_bos(model, prepend_bos)
    toks = [tokenize(model, rp, prepend_bos=prepend_bos) for rp in rendered]
    width = max(len(t.ids) for t in toks)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None and width > n_ctx:
        raise PromptError(f"Prompt of {width} tokens exceeds the model's context of {n_ctx}; use fewer shots.")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    b = len(toks)
    tokens = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    roles = torch.full((b, width), ROLE_ID["pad"], dtype=torch.long)
    demo = torch.full((b, width), -1, dtype=torch.long)
    for i, t in enumerate(toks):
        n = len(t.ids)
        tokens[i, :n] = torch.tensor(t.ids)
        mask[i, :n] = 1
        roles[i, :n] = torch.tensor(t.roles)
        demo[i, :n] = torch.tensor(t.demo)
    extra = accepted if accepted is not None else [()] * len(toks)
    full = [tuple(dict.fromkeys([tuple(t.answer_ids), *(tuple(a) for a in alts)])) for t, alts in zip(toks, extra)]
    return PromptBatch(
        tokens=tokens,
        attention_mask=mask,
        query_pos=mask.sum(1) - 1,
        roles=roles,
        demo_index=demo,
        answer_tokens=torch.tensor([t.answer_ids[0] for t in toks]),
        prompts=tuple(rp.text for rp in rendered),
        answers=tuple(rp.answer for rp in rendered),
        answer_ids=tuple(tuple(t.answer_ids) for t in toks),
        accepted=tuple(full),
        queries=tuple(queries),
        prepend_bos=prepend_bos,
        item_counts=item_counts,
    )


# ---- character spans -> token positions ----------------------------------------------------------------
def query_char_span(batch: PromptBatch, row: int) -> tuple[int, int]:
    """Character span ``[start, end)`` of row ``row``'s query input inside ``batch.prompts[row]``.

    The query is rendered last (``input_prefix + query + input_suffix``), so it is the last occurrence of
    the query text in the prompt.
    """
    text, query = batch.prompts[row], batch.queries[row].input
    start = text.rfind(query)
    if start < 0:
        raise PromptError(f"Row {row}: the query {query!r} does not occur in its prompt.")
    return start, start + len(query)


def span_mask(model: ModelLike, batch: PromptBatch, spans: Sequence[Sequence[tuple[int, int]]]) -> Bool[Tensor, "batch pos"]:
    """Tokens of each row overlapping any of that row's character spans ``[start, end)`` of ``batch.prompts[row]``.

    Offsets come from the tokenizer's offset mapping (BOS and padding never match).

    Raises:
        PromptError: when a span covers no token, or the prompt no longer tokenizes to ``batch.tokens``.
    """
    if len(spans) != len(batch):
        raise PromptError(f"span_mask got spans for {len(spans)} rows; the batch has {len(batch)}.")
    tok = _tokenizer(model)
    mask = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    for row, row_spans in enumerate(spans):
        ids, offsets = _encode(tok, batch.prompts[row])
        shift = int(batch.roles[row, 0] == ROLE_ID["bos"])
        if batch.tokens[row, shift : shift + len(ids)].tolist() != ids:
            raise PromptError(f"Row {row}: batch.prompts[{row}] does not re-tokenize to batch.tokens.")
        for a, b in row_spans:
            hits = [shift + t for t, (s, e) in enumerate(offsets) if s < b and e > a]
            if not hits:
                raise PromptError(f"Row {row}: the character span [{a}, {b}) covers no token.")
            mask[row, hits] = True
    return mask
