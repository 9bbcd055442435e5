"""Attention ratio: hand-made patterns, TransformerLens's own cache, and meta-span -> token mapping."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.representations.attention_ratio import (
    AttentionRatioResult,
    attention_mass,
    attention_ratio,
    region_mask,
    share,
)
from tlens_icl.errors import PromptError, TlensICLError
from tlens_icl.prompts.batch import ROLE_ID, query_char_span, span_mask
from tlens_icl.results.base import tensors_equal
from tlens_icl.tasks import TaskItem


def test_masses_and_share_from_a_hand_made_pattern():
    pattern = torch.zeros(1, 2, 4, 4)
    pattern[0, 0, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # head 0, query at position 3
    pattern[0, 1, 3] = torch.tensor([0.5, 0.0, 0.5, 0.0])
    pattern[0, :, 2] = 9.0  # another query row must be ignored
    rel = torch.tensor([[False, True, False, False]])
    irr = torch.tensor([[False, False, True, True]])
    q = torch.tensor([3])
    m_rel, m_irr = attention_mass(pattern, q, rel), attention_mass(pattern, q, irr)
    torch.testing.assert_close(m_rel, torch.tensor([[0.2, 0.0]]))
    torch.testing.assert_close(m_irr, torch.tensor([[0.7, 0.5]]))
    torch.testing.assert_close(share(m_rel, m_irr), torch.tensor([[0.2 / 0.9, 0.0]]))
    res = AttentionRatioResult(
        relevant_mass=m_rel[:, None], irrelevant_mass=m_irr[:, None], n_relevant=torch.tensor([1]),
        n_irrelevant=torch.tensor([2]), conditions=("c",), condition_names=("c",), layers=(0,), relevant="r",
        irrelevant="i", info={})
    torch.testing.assert_close(res.ratio(), torch.tensor([[0.2 / 0.9, 0.0]]))
    torch.testing.assert_close(res.ratio(per_token=True), torch.tensor([[0.2 / (0.2 + 0.35), 0.0]]))
    assert torch.isnan(share(torch.zeros(1), torch.zeros(1))).all()


def test_masses_equal_transformer_lens_patterns(any_model, task_a):
    b0 = ti.make_prompts(any_model, task_a, n=3, n_shots=0, seed=0, prepend_bos=True)  # "bos" is a region here
    b3 = ti.make_prompts(any_model, task_a, n=3, n_shots=3, seed=0, prepend_bos=True)
    res = attention_ratio(any_model, {"0-shot": b0, "3-shot": b3}, relevant="demo_output", irrelevant="bos", batch_size=2)
    assert res.condition_names == ("0-shot", "3-shot")
    assert res.relevant_mass.shape == (6, 2, any_model.cfg.n_heads)
    _, cache = any_model.run_with_cache(b3.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in range(2):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]
        at_q = pat[torch.arange(3), :, b3.query_pos]  # [batch, head, key]
        ref_rel = (at_q * b3.mask("demo_output")[:, None]).sum(-1)
        torch.testing.assert_close(res.relevant_mass[3:, layer], ref_rel.float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(res.irrelevant_mass[3:, layer], at_q[..., 0].float(), atol=1e-5, rtol=0)
    assert (res.relevant_mass[:3] == 0).all()  # no demonstrations at 0 shots
    # NaN exactly where no 3-shot prompt's query sees either region: Gemma 3's local layers, whose window
    # (shorter than the prompt) hides both the BOS and the demonstrations; nowhere on a full-attention layer.
    unseen = ((res.relevant_mass[3:] + res.irrelevant_mass[3:]) == 0).all(0)
    assert torch.equal(torch.isnan(res.ratio("3-shot")), unseen)
    full = [layer for layer in range(2) if not _sliding(any_model, layer)]
    assert full and not unseen[full].any()
    assert res.change().shape == (2, any_model.cfg.n_heads)


def _sliding(model, layer):
    """Whether ``layer`` of a wrapped Hugging Face model attends within a sliding window."""
    types = getattr(getattr(getattr(model, "original_model", None), "config", None), "layer_types", None)
    return bool(types) and types[layer] == "sliding_attention"


def reading_task():
    items = [
        TaskItem(f"in{i} in{i + 1} in{i + 2} in{i + 3}", f"a{i}",
                 meta={"relevant": f"in{i + 1} in{i + 2}", "distractors": [f"in{i + 3}"]})
        for i in range(0, 20, 4)
    ]
    return ti.Task("toy_reading", tuple(items))


def test_meta_spans_map_to_the_query_tokens(native_model, tokenizer):
    batch = ti.make_prompts(native_model, reading_task(), n=3, n_shots=2, seed=0)
    rel = region_mask(native_model, batch, "meta:relevant")
    irr = region_mask(native_model, batch, "meta:distractors")
    for row in range(3):
        item = batch.queries[row]
        words = item.input.split()
        toks = batch.str_tokens(native_model, row)
        in_query = batch.roles[row, : len(toks)] == ROLE_ID["query_input"]
        # BPE pieces: the selected tokens spell exactly the meta text (a piece may carry its leading space)
        assert "".join(t for t, m in zip(toks, rel[row]) if m).strip() == " ".join(words[1:3])
        assert "".join(t for t, m in zip(toks, irr[row]) if m).strip() == words[3]
        assert bool(in_query[rel[row, : len(toks)]].all())  # the query's copy, never a demonstration's
        start, end = query_char_span(batch, row)
        assert batch.prompts[row][start:end] == item.input
    res = attention_ratio(native_model, batch)
    assert res.relevant == "meta:relevant" and res.n_relevant.tolist() == rel.sum(1).tolist()
    assert min(res.n_relevant.tolist()) >= 2


def test_bad_regions_raise_before_any_forward(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=2, n_shots=1)
    calls = []
    handle = native_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(PromptError, match="meta"):
            attention_ratio(native_model, batch)  # toy_a items have no meta
        with pytest.raises(TlensICLError, match="overlap"):
            attention_ratio(native_model, batch, relevant="demo_input", irrelevant="demo_input")
        with pytest.raises(TlensICLError, match="region"):
            attention_ratio(native_model, batch, relevant="nowhere", irrelevant="bos")
        with pytest.raises(PromptError, match="covers no token"):
            span_mask(native_model, batch, [[(0, 0)], [(0, 0)]])
    finally:
        handle.remove()
    assert not calls


def test_round_trip_and_views(native_model, task_a, tmp_path):
    batch = ti.make_prompts(native_model, task_a, n=2, n_shots=2)
    last = lambda b: torch.nn.functional.one_hot(b.query_pos, b.tokens.shape[1]).bool()  # noqa: E731
    res = attention_ratio(native_model, batch, relevant="demo_output", irrelevant=last)
    assert res.irrelevant == "<lambda>"
    loaded = AttentionRatioResult.load(res.save(tmp_path / "ar"))
    assert tensors_equal(res, loaded)
    assert len(res.to_dataframe()) == 8 and "<img" in res._repr_html_()


def test_shipped_reading_comprehension_spans_map_to_tokens():
    """The real task data: every meta substring maps to the query's tokens (word-level tokenizer built on its words)."""
    from conftest import build_model, make_tokenizer

    task = ti.load_task("reading_comprehension")
    words = sorted({w for it in task.items for w in (it.input + " " + it.output).split()} | {"Q:", "A:", "\n"})
    model = build_model("native", make_tokenizer(words), n_layers=1, n_ctx=256)
    batch = ti.make_prompts(model, task, n=16, n_shots=1, seed=0)
    rel = region_mask(model, batch, "meta:relevant")
    irr = region_mask(model, batch, "meta:distractors")
    assert not bool((rel & irr).any())
    query = batch.mask("query_input") | batch.mask("answer_position")
    for row in range(len(batch)):
        item = batch.queries[row]
        toks = batch.str_tokens(model, row)
        assert " ".join(t for t, m in zip(toks, rel[row]) if m) == item.meta["relevant"]
        assert int(irr[row].sum()) == sum(len(d.split()) for d in item.meta["distractors"])
        assert bool(query[row][rel[row] | irr[row]].all())
    res = attention_ratio(model, {"0-shot": ti.make_prompts(model, task, n=4, n_shots=0), "1-shot": batch.select(slice(0, 4))})
    assert res.relevant_mass.shape == (8, 1, 4)
