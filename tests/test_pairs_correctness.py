"""Prompt sets that cannot silently lie: corruptions that change the prompt, distinct queries, clean
demonstrations, item counts, the BOS option, and task files with malformed alternatives."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

import tlens_icl as ti
from tlens_icl.prompts.pairs import usable_task
from tlens_icl.tasks import TaskItem
from tlens_icl.errors import PromptError, TlensICLError
from tlens_icl.prompts.batch import ROLE_ID

# labels of 1 and 2 tokens (word-level test tokenizer: one token per word)
MIXED_LABELS = ti.Task.from_pairs("mixed_labels", [(f"in{i}", f"a{i}" if i % 3 else f"b{i} a{i}") for i in range(24)])


def labels(batch_eps):
    return [y for _, y in batch_eps.demos]


def test_shuffled_labels_always_change_the_prompt(native_model):
    """End to end on a BPE tokenizer (labels of different token lengths): every corrupted prompt differs
    from its clean prompt and shows the same labels."""
    from tlens_icl.prompts import pairs as P

    for seed in range(6):
        for shots in (2, 3, 5):
            pp = ti.make_prompt_pairs(native_model, MIXED_LABELS, n=6, n_shots=shots, seed=seed)
            clean = P.sample_episodes(P.usable_task(native_model, MIXED_LABELS), 6, shots, seed)
            for i, ep in enumerate(clean):
                assert pp.clean.prompts[i] != pp.corrupted.prompts[i]
                shown = [line.split("\nA: ")[1] for line in pp.corrupted.prompts[i].split("\n\n")[:-1]]
                assert Counter(shown) == Counter(labels(ep))


def test_shuffled_labels_derange_within_token_lengths():
    """On random label lists: labels stay among labels of their token length (aligned) and no label stays
    put in a length group that allows it; if no group can change, labels move across lengths."""
    import random

    from tlens_icl.prompts import pairs as P

    gen = random.Random(0)
    ctx = P._Ctx(MIXED_LABELS, random.Random(1), lambda y: len(y.split()), None)
    words = ["a1", "a2", "a3", "b4 a4", "b5 a5", "c6 b6 a6"]
    for _ in range(300):
        demo_labels = [gen.choice(words) for _ in range(gen.randint(2, 8))]
        if len(set(demo_labels)) < 2:
            continue
        ep = P.Episode(tuple((f"in{i}", y) for i, y in enumerate(demo_labels)), TaskItem("in9", "a9"))
        new = labels(P.CORRUPTIONS["shuffled_labels"](ep, ctx))
        assert Counter(new) == Counter(demo_labels) and new != demo_labels
        groups: dict[int, list[int]] = {}
        for i, y in enumerate(demo_labels):
            groups.setdefault(ctx.length(y), []).append(i)
        movable = [g for g in groups.values() if len({demo_labels[i] for i in g}) > 1]
        if not movable:
            continue  # moved across lengths: checked above that the prompt changed
        assert [ctx.length(y) for y in new] == [ctx.length(y) for y in demo_labels]  # aligned
        for g in movable:
            counts = Counter(demo_labels[i] for i in g)
            if 2 * max(counts.values()) <= len(g):
                assert all(new[i] != demo_labels[i] for i in g)


def test_shuffled_labels_keep_alignment_when_possible(word_model):
    same_len = ti.Task.from_pairs("same_len", [(f"in{i}", f"a{i}") for i in range(24)])  # one token each
    assert ti.make_prompt_pairs(word_model, same_len, n=8, n_shots=4, seed=0).aligned


def test_shuffled_labels_raise_when_nothing_can_change(native_model, forward_counter):
    with pytest.raises(PromptError, match="at least 2 demonstrations"):
        ti.make_prompt_pairs(native_model, MIXED_LABELS, n=4, n_shots=1)
    one_label = ti.Task.from_pairs("one_label", [(f"in{i}", "a1") for i in range(10)])
    with pytest.raises(PromptError, match="one label"):
        ti.make_prompt_pairs(native_model, one_label, n=4, n_shots=3)
    with pytest.raises(PromptError, match="unchanged"):  # random labels: no other output exists
        ti.make_prompt_pairs(native_model, one_label, n=4, n_shots=3, corruption="random_labels")
    assert not forward_counter


def test_majority_label_still_changes_the_prompt():
    """One label on most demos: a full derangement is impossible, but every other demo gets a new label."""
    import random

    from tlens_icl.prompts import pairs as P

    ctx = P._Ctx(MIXED_LABELS, random.Random(0), lambda y: len(y.split()), None)
    for demo_labels in (["a1", "a1", "a1", "a2", "a3"], ["a1", "a1", "b2 a2"], ["a1", "a3", "a2", "a1", "a1"]):
        for _ in range(20):
            ep = P.Episode(tuple((f"in{i}", y) for i, y in enumerate(demo_labels)), TaskItem("in9", "a9"))
            new = labels(P.CORRUPTIONS["shuffled_labels"](ep, ctx))
            assert Counter(new) == Counter(demo_labels) and new != demo_labels
            assert all(a != b for a, b in zip(new, demo_labels) if b != "a1")


def test_queries_are_distinct_and_never_repeat(native_model, forward_counter):
    task = ti.Task.from_pairs("small", [(f"in{i}", f"a{i}") for i in range(12)])
    batch = ti.make_prompts(native_model, task, n=12, n_shots=2)
    assert batch.distinct_queries == 12 == len(batch)
    with pytest.raises(TlensICLError, match="queries would repeat"):
        ti.make_prompts(native_model, task, n=13, n_shots=2)
    with pytest.raises(TlensICLError, match="queries would repeat"):
        ti.icl_accuracy(native_model, task, shots=[0, 2], n=20)
    assert not forward_counter


def test_duplicate_and_contradictory_items_are_never_both_shown(native_model):
    items = [(f"in{i}", f"a{i}") for i in range(10)] + [("in1", "a1"), ("in1", "a1"), ("in2", "b2")]
    task = ti.Task.from_pairs("messy", items)
    clean, counts = usable_task(native_model, task, report=True)
    assert counts == {"task": "messy", "total": 13, "duplicates": 2, "conflicts": 1, "unknown_tokens": 0,
                      "multi_token": 0, "usable": 10}
    merged = next(it for it in clean.items if it.input == "in2")
    assert merged.output == "a2" and merged.alternatives == ("b2",)  # both stated answers are accepted
    batch = ti.make_prompts(native_model, task, n=10, n_shots=8, seed=0)
    assert batch.item_counts == counts
    for i in range(len(batch)):
        demo_inputs = [ln.split(" ->")[0] for ln in batch.prompts[i].split("\n")[:-1]] if "->" in batch.prompts[i] else \
            [blk.split("\n")[0][3:] for blk in batch.prompts[i].split("\n\n")[:-1]]
        assert len(demo_inputs) == len(set(demo_inputs)) == 8
        assert batch.queries[i].input not in demo_inputs


def test_item_counts_report_filtering(word_model):
    task = ti.Task.from_pairs("filt", [(f"in{i}", f"a{i}" if i % 2 else f"b{i} a{i}") for i in range(10)] + [("zzz", "a1")])
    _, counts = usable_task(word_model, task, single_token="filter", report=True)
    assert counts["unknown_tokens"] == 1 and counts["multi_token"] == 5 and counts["usable"] == 5
    pairs = ti.make_prompt_pairs(word_model, task, n=4, n_shots=2, single_token="filter")
    assert pairs.item_counts == counts and pairs.clean.item_counts == pairs.corrupted.item_counts


def test_prepend_bos_option(native_model, task_a):
    bos = native_model.tokenizer.bos_token_id
    default = ti.make_prompts(native_model, task_a, n=4, n_shots=2)
    off = ti.make_prompts(native_model, task_a, n=4, n_shots=2, prepend_bos=False)
    on = ti.make_prompts(native_model, task_a, n=4, n_shots=2, prepend_bos=True)
    assert default.prepend_bos is True and on.prepend_bos is True and off.prepend_bos is False
    assert torch.equal(on.tokens, default.tokens) and (on.tokens[:, 0] == bos).all()
    assert not (off.tokens == bos).any() and (off.roles != ROLE_ID["bos"]).all()
    assert torch.equal(on.tokens[:, 1:], off.tokens[:, : on.tokens.shape[1] - 1])
    assert torch.equal(on.query_pos, off.query_pos + 1)
    assert off.select([0, 2]).prepend_bos is False
    pairs = ti.make_prompt_pairs(native_model, task_a, n=4, n_shots=2, prepend_bos=False)
    assert pairs.prepend_bos is False and pairs.corrupted.prepend_bos is False
    acc = ti.icl_accuracy(native_model, task_a, shots=[1], n=4, prepend_bos=False)
    assert acc.info["prepend_bos"] is False


def test_model_default_bos_is_followed(task_a):
    from conftest import build_model

    model = build_model("native")
    model.cfg.default_prepend_bos = False  # what load_model sets for a GGUF whose tokenizer adds no BOS
    batch = ti.make_prompts(model, task_a, n=3, n_shots=1)
    assert batch.prepend_bos is False and not (batch.roles == ROLE_ID["bos"]).any()


def test_alternatives_given_as_a_string_are_rejected(tmp_path):
    d = {"name": "bad_alts", "category": "custom", "items": [{"input": "cold", "output": "hot", "alternatives": "warm"}]}
    with pytest.raises(TlensICLError, match="alternatives must be a list"):
        ti.Task.from_dict(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(TlensICLError, match="alternatives must be a list"):
        ti.register_task(path)
    with pytest.raises(TlensICLError, match="alternatives must be a list"):
        ti.Task.from_dataset({"input": ["cold"], "output": ["hot"], "alternatives": ["warm"]}, "ds")
    with pytest.raises(TlensICLError, match="no 'output'"):
        ti.Task.from_dict({"name": "x", "items": [{"input": "cold"}]})
    ok = ti.Task.from_dict({**d, "items": [{"input": "cold", "output": "hot", "alternatives": ["warm"]}]})
    assert ok.items[0].answers == ("hot", "warm")
