"""vLLM through TransformerLens's ``RemoteBridge``, tested against a fake driver (``tests/remote_fake.py``).

The fake satisfies TL's driver protocol with vLLM's hook points and limits and computes with a local
bridge of the same weights, so: the analyses that fit the capture/intervene vocabulary must send the
right specs and give what the local model gives; the others must refuse before any forward pass,
naming the alternative.
"""
from __future__ import annotations

import pytest
import torch
from conftest import build_model

pytest.importorskip("transformer_lens.model_bridge.driver_protocol", reason="RemoteBridge needs TransformerLens >= 4.3")
from remote_fake import remote_bridge  # noqa: E402

import tlens_icl as ti  # noqa: E402
from tlens_icl.analyses.vectors.common import mean_head_activations  # noqa: E402
from tlens_icl.analyses.vectors.function_vectors import function_vector_sweep  # noqa: E402
from tlens_icl.analyses.vectors.task_vectors import task_vector_sweep  # noqa: E402
from tlens_icl.errors import UnsupportedOnBackendError  # noqa: E402
from tlens_icl.models.adapter import family  # noqa: E402


@pytest.fixture(scope="module")
def local(tokenizer):
    return build_model("llama", tokenizer, n_layers=3)


@pytest.fixture()
def remote(local):
    return remote_bridge(local)


def _close(a, b):
    """Equal up to float32 rounding (the fake runs one prompt per forward, the local model several)."""
    return torch.allclose(a, b, atol=1e-7, rtol=1e-4, equal_nan=True)


def _knn_stable_rows(got, ref, site="resid_post"):
    """``[shots, unit, example]``: rows whose leave-one-out kNN decision cannot differ between two routes.

    The routes' distance matrices must agree within ``eps`` (asserted); a row's neighbour order can then
    change only if one of its sorted distance gaps lies within ``2 eps`` of the tie tolerance
    (``tlens_icl._ties.neighbour_order`` chains gaps up to it), so rows without such a gap are stable.
    """
    import numpy as np

    from tlens_icl._ties import RTOL
    from tlens_icl.analyses.representations.decodability import pairwise_distances

    vg, _ = got.units(site)
    vr, _ = ref.units(site)
    groups = ref.shot_groups()
    out = torch.zeros(len(groups), vr.shape[1], len(next(iter(groups.values()))), dtype=torch.bool)
    for s, idx in enumerate(groups.values()):
        for u in range(vr.shape[1]):
            dg, dr = pairwise_distances(vg[idx, u].numpy()), pairwise_distances(vr[idx, u].numpy())
            eps = float(np.abs(dg - dr).max())
            assert eps < 1e-6, f"the routes' distances differ by {eps}"
            tol = RTOL * float(dr.max())
            np.fill_diagonal(dr, np.inf)
            gaps = np.diff(np.sort(dr, 1)[:, :-1], axis=1)
            out[s, u] = torch.from_numpy((np.abs(gaps - tol) > 2 * eps + RTOL * eps).all(1))
    return out


def test_the_fake_is_a_remote_bridge_with_vllm_hook_points(remote):
    model, driver = remote
    assert family(model) == "remote" and not callable(model)
    assert "blocks.1.hook_out" in driver.supported_hook_points and "blocks.1.attn.hook_z" in driver.non_fireable_hook_points


def test_icl_accuracy_runs_one_prompt_per_call_and_matches_the_local_model(local, remote, task_a):
    model, driver = remote
    kw = dict(shots=[0, 2], n=5, seed=0, batch_size=4)
    got, ref = ti.icl_accuracy(model, task_a, **kw), ti.icl_accuracy(local, task_a, **kw)
    assert torch.equal(got.correct, ref.correct) and _close(got.answer_prob, ref.answer_prob)
    assert len(driver.calls) == 2 * 5 and all(c.input_ids.shape[0] == 1 and not c.intervene for c in driver.calls)
    assert all(c.capture in ((), ("embed.hook_out",)) for c in driver.calls)  # no activation shipped without need


def test_the_batched_vllm_path_takes_several_prompts_per_call_for_captures(local, task_a):
    model, driver = remote_bridge(local, enable_batching=True)
    kw = dict(shots=(2,), n=6, seed=4, sites=["resid_post"], batch_size=4)
    got, ref = ti.task_activations(model, task_a, **kw), ti.task_activations(local, task_a, **kw)
    assert _close(got.resid_post, ref.resid_post)
    assert [c.input_ids.shape[0] for c in driver.calls] == [4, 2]


def test_residual_activations_decodability_and_rsa_match_the_local_model(local, remote, task_a, task_b):
    model, driver = remote
    kw = dict(shots=(0, 2), n=6, seed=3, sites=["resid_post", "attn_out", "mlp_out"], batch_size=4)
    got, ref = ti.task_activations(model, [task_a, task_b], **kw), ti.task_activations(local, [task_a, task_b], **kw)
    for site in ("resid_post", "attn_out", "mlp_out"):
        assert _close(getattr(got, site), getattr(ref, site))
    captured = set().union(*(c.capture for c in driver.calls))
    assert {f"blocks.{L}.hook_out" for L in range(3)} <= captured and "blocks.0.attn.hook_out" in captured
    a = ti.concept_decodability(got, site="resid_post", k=3, n_shuffles=2)
    b = ti.concept_decodability(ref, site="resid_post", k=3, n_shuffles=2)
    # kNN decisions are compared only where no distance gap sits within the routes' difference of the tie
    # tolerance (anywhere else float rounding could decide them); the distances themselves always
    stable = _knn_stable_rows(got, ref)
    assert stable.float().mean() > 0.8, "too few rows have a margin to compare"
    assert torch.equal(a.correct[stable], b.correct[stable])
    whole = stable.all(-1)  # the shuffled control of a (shots, layer) cell reuses all of its rows
    assert whole.any() and torch.equal(a.shuffled[whole], b.shuffled[whole])
    # RSA at 2 shots (0-shot prompts of the two tasks share queries: tied distances, broken by rounding noise)
    r_remote, r_local = ti.rsa(got, n_permutations=20), ti.rsa(ref, n_permutations=20)
    assert torch.allclose(r_remote.rho[1], r_local.rho[1], atol=1e-4)


def test_a_function_vector_sweep_sends_add_specs_at_each_query(local, remote, task_a):
    model, driver = remote
    fv = torch.randn(local.cfg.d_model, generator=torch.Generator().manual_seed(0))
    kw = dict(layers=[0, 2], settings=("zero_shot",), n=4, n_shots=2, seed=1, coeff=2.0, batch_size=4)
    got, ref = function_vector_sweep(model, fv, task_a, **kw), function_vector_sweep(local, fv, task_a, **kw)
    assert torch.equal(got.correct, ref.correct) and _close(got.answer_prob, ref.answer_prob)
    assert not torch.equal(got.answer_prob[0, 0], got.baseline_prob[0]), "the vector changed nothing"
    edited = [c for c in driver.calls if c.intervene]
    assert len(edited) == 2 * 4  # one forward per layer and prompt
    batch = ti.make_prompts(local, task_a, n=4, n_shots=0, seed=1)
    for c in edited:
        (name, spec), = c.intervene.items()
        assert name in ("blocks.0.hook_out", "blocks.2.hook_out") and spec["op"] == "add"
        assert torch.equal(torch.as_tensor(spec["value"]), 2.0 * fv)
        row = [i for i in range(4) if torch.equal(batch.tokens[i, : c.input_ids.shape[1]], c.input_ids[0])][0]
        assert spec["pos"] == int(batch.query_pos[row])


def test_a_task_vector_is_set_at_the_query(local, remote, task_a):
    model, driver = remote
    tv_remote = ti.task_vector(model, task_a, n=4, n_shots=2, seed=2)
    tv_local = ti.task_vector(local, task_a, n=4, n_shots=2, seed=2)
    assert _close(tv_remote.vectors, tv_local.vectors)
    kw = dict(layers=[1], n=4, seed=5, batch_size=4)
    got, ref = task_vector_sweep(model, tv_remote, task_a, **kw), task_vector_sweep(local, tv_local, task_a, **kw)
    assert torch.equal(got.correct, ref.correct) and _close(got.answer_prob, ref.answer_prob)
    sets = [c.intervene["blocks.1.hook_out"] for c in driver.calls if c.intervene]
    assert sets and all(s["op"] == "set" and isinstance(s["pos"], int) for s in sets)


@pytest.mark.parametrize("call", [
    lambda m, t: ti.indirect_effect(m, t, n_mean=2, n=2, n_shots=2),
    lambda m, t: mean_head_activations(m, ti.make_prompts(m, t, n=2, n_shots=1)),
    lambda m, t: ti.task_activations(m, t, shots=(1,), n=2, sites=["z"]),
    lambda m, t: ti.task_activations(m, t, shots=(1,), n=2, sites=["resid_pre"]),
    lambda m, t: ti.head_patching(m, ti.make_prompt_pairs(m, t, n=2, n_shots=2)),
    lambda m, t: ti.attribution_patching(m, ti.make_prompt_pairs(m, t, n=2, n_shots=2)),
], ids=["indirect_effect", "mean_head_activations", "z", "resid_pre", "head_patching", "attribution"])
def test_analyses_needing_heads_or_gradients_refuse_before_any_forward(remote, task_a, call):
    model, driver = remote
    with pytest.raises(UnsupportedOnBackendError, match="device_map") as e:
        call(model, task_a)
    assert "Analyses that run on vLLM" in str(e.value)
    assert driver.calls == [], "a forward ran before the refusal"


def test_an_edit_without_a_spec_form_raises_instead_of_being_ignored(local, remote, task_a):
    model, _ = remote
    icv = ti.in_context_vector(local, task_a, n=4, n_shots=2)
    batch = ti.make_prompts(local, task_a, n=1, n_shots=0)
    with pytest.raises(UnsupportedOnBackendError, match="cannot apply"):
        with ti.steer(model, icv.to_steering_vector()):
            from tlens_icl.models.adapter import forward
            forward(model, batch.tokens)


def test_position_edits_need_the_position_buffers(local, task_a):
    model, _ = remote_bridge(local, enable_position_interventions=False)
    with pytest.raises(NotImplementedError, match="enable_position_interventions=True"):
        function_vector_sweep(model, torch.ones(local.cfg.d_model), task_a, layers=[0], settings=("zero_shot",), n=2)


def test_the_query_intervention_engine_refuses_a_remote_model_before_any_forward(local, remote, task_a):
    """Its routes (key/value reuse, appended copies, its own patched loop) need local forwards; sweeps use specs."""
    from tlens_icl.engine.query import query_interventions, resid_edits

    model, driver = remote
    batch = ti.make_prompts(local, task_a, n=2, n_shots=1)
    edits = resid_edits([0, 1], torch.ones(2, local.cfg.d_model), mode="add")
    with pytest.raises(UnsupportedOnBackendError, match="query_interventions"):
        query_interventions(model, batch.tokens, batch.query_pos, edits, lambda logits, rows: logits[:, :1])
    assert driver.calls == []


def test_the_drivers_facts_are_resolved_into_the_handle(local):
    from tlens_icl.models.adapter import handle

    model, driver = remote_bridge(local)
    h = handle(model)
    assert h.remote and h.family == "remote" and (h.call_rows, h.edit_rows) == (1, 1)
    assert h.fireable == {n: hp.name for n, hp in model.hook_dict.items() if hp.name in driver.supported_hook_points}
    assert h.fireable["blocks.0.hook_resid_post"] == "blocks.0.hook_out" and "blocks.0.attn.hook_z" not in h.fireable
    batched, _ = remote_bridge(local, enable_batching=True)
    assert (handle(batched).call_rows, handle(batched).edit_rows) == (None, 1)  # captures batched, edits one by one
