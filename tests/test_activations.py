"""Activation collection: values equal TransformerLens's own cache at the same positions, on every architecture."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.representations.activations import (
    ActivationSet,
    collect_activations,
    from_arrays,
    task_activations,
)
from tlens_icl.errors import ModelStateError, TlensICLError
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.results.base import tensors_equal


@pytest.fixture(scope="module")
def prompts_by_arch():
    cache: dict[int, PromptBatch] = {}

    def get(model, task):
        if id(model) not in cache:
            cache[id(model)] = ti.make_prompts(model, task, n=5, n_shots=2, seed=0)
        return cache[id(model)]

    return get


def _reference(model, batch, name):
    _, cache = model.run_with_cache(batch.tokens, names_filter=[name])
    return cache[name]


def test_collected_values_equal_run_with_cache(any_model, task_a, prompts_by_arch):
    batch = prompts_by_arch(any_model, task_a)
    acts = collect_activations(any_model, batch, sites=["resid_pre", "resid_post", "z", "head_out"], batch_size=2)
    rows, q = torch.arange(len(batch)), batch.query_pos
    for layer in range(any_model.cfg.n_layers):
        for site, name in (("resid_pre", f"blocks.{layer}.hook_resid_pre"), ("resid_post", f"blocks.{layer}.hook_resid_post"),
                           ("z", f"blocks.{layer}.attn.hook_z")):
            ref = _reference(any_model, batch, name)[rows, q]
            torch.testing.assert_close(acts.get(site)[:, layer], ref.float(), atol=1e-5, rtol=1e-5)
        z = _reference(any_model, batch, f"blocks.{layer}.attn.hook_z")[rows, q]
        head_out = torch.einsum("bhd,hdm->bhm", z, any_model.W_O[layer].detach())
        torch.testing.assert_close(acts.head_out[:, layer], head_out.float(), atol=1e-5, rtol=1e-5)
    assert acts.n_shots.tolist() == [2] * len(batch)
    assert acts.queries == tuple(it.input for it in batch.queries)


def test_role_position_is_the_mean_over_the_role(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=4, n_shots=3, seed=1)
    acts = collect_activations(native_model, batch, sites=["resid_post"], position="demo_output", layers=[1])
    ref = _reference(native_model, batch, "blocks.1.hook_resid_post")
    mask = batch.mask("demo_output")
    expected = torch.stack([ref[i, mask[i]].mean(0) for i in range(len(batch))])
    torch.testing.assert_close(acts.resid_post[:, 0], expected, atol=1e-5, rtol=1e-5)
    assert acts.layers == (1,)


def test_pairs_give_clean_then_corrupted_rows(native_model, task_a):
    pairs = ti.make_prompt_pairs(native_model, task_a, n=3, n_shots=2, corruption="shuffled_labels")
    acts = collect_activations(native_model, pairs, sites=["resid_post"])
    assert acts.conditions == ("clean",) * 3 + ("corrupted",) * 3
    assert set(acts.tasks) == {"toy_a"}
    clean = collect_activations(native_model, pairs.clean, sites=["resid_post"])
    assert torch.equal(acts.resid_post[:3], clean.resid_post)


def test_task_activations_labels_and_round_trip(native_model, task_a, task_b, tmp_path):
    acts = task_activations(native_model, [task_a, task_b], shots=(0, 2), n=3, sites=["resid_post", "z"])
    assert len(acts) == 12
    assert acts.tasks == ("toy_a",) * 6 + ("toy_b",) * 6
    assert acts.n_shots.tolist() == [0, 0, 0, 2, 2, 2] * 2
    assert {s: len(i) for s, i in acts.shot_groups().items()} == {0: 6, 2: 6}
    assert acts.z.shape == (12, 2, 4, 16)
    loaded = ActivationSet.load(acts.save(tmp_path / "acts"))
    assert tensors_equal(acts, loaded)
    sub = acts.select([0, 5])
    assert sub.tasks == ("toy_a", "toy_a") and torch.equal(sub.z, acts.z[[0, 5]])


def test_bad_input_raises_before_any_forward(native_model, task_a):
    zero = ti.make_prompts(native_model, task_a, n=2, n_shots=0)
    calls = []
    handle = native_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(TlensICLError, match="site"):
            collect_activations(native_model, zero, sites=["nope"])
        with pytest.raises(TlensICLError, match="role"):
            collect_activations(native_model, zero, position="demo_output")  # a 0-shot prompt has no demo tokens
        with pytest.raises(TlensICLError, match="layers"):
            collect_activations(native_model, zero, layers=[7])
    finally:
        handle.remove()
    assert not calls
    native_model.train()
    try:
        with pytest.raises(ModelStateError):
            collect_activations(native_model, zero)
    finally:
        native_model.eval()


def test_activation_set_labels():
    acts = from_arrays(torch.randn(4, 2, 3), ["a", "a", "b", "b"], n_shots=[0, 1, 0, 1],
                       meta=[{"slope": 1}, {"slope": 2}, {"slope": 1}, {"slope": 3}])
    assert acts.labels("meta.slope") == [1, 2, 1, 3]
    assert acts.labels("n_shots") == [0, 1, 0, 1]
    with pytest.raises(TlensICLError, match="meta"):
        acts.labels("meta.nope")
    with pytest.raises(TlensICLError, match="not collected"):
        acts.get("z")
    with pytest.raises(TlensICLError, match="4-D"):
        from_arrays(torch.randn(4, 2, 3), ["a"] * 4, site="z")
