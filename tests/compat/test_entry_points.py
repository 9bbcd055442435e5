"""Every public entry point that takes a model accepts a HookedTransformer (TL 3): one small call each.

The exactness of each analysis is tested on bridges in the core suite and on HookedTransformers in
test_hooked.py; here each entry point must run on a HookedTransformer and return its result type.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.analyses.causal.attribution import Fidelity, patching_fidelity
from tlens_icl.analyses.causal.mediation import head_attention_html
from tlens_icl.analyses.causal.patching import ActivationPatchingResult, HeadPatchingResult
from tlens_icl.analyses.heads.overlap import HeadOverlapResult, head_overlap
from tlens_icl.analyses.representations.attention_ratio import AttentionRatioResult
from tlens_icl.analyses.representations.compare_heads import HeadComparisonResult, compare_heads
from tlens_icl.analyses.representations.decodability import DecodabilityResult
from tlens_icl.analyses.representations.probing import ProbeResult
from tlens_icl.analyses.vectors.common import LayerSweepResult
from tlens_icl.workflows.compare import ComparisonResult
from tlens_icl.analyses.vectors.function_vectors import function_vector_from_task, function_vector_sweep
from tlens_icl.analyses.vectors.task_vectors import task_vector_sweep


@pytest.fixture(scope="module")
def model(ht_llama):
    return ht_llama


def test_causal_entry_points(model, task_a, tmp_path):
    # one-token labels keep the shuffled pairs aligned, as activation_patching (every position) needs
    pairs = ti.make_prompt_pairs(model, task_a, n=2, n_shots=2, seed=0, single_token="filter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a route fallback on a model without reusable keys/values
        hp = ti.head_patching(model, pairs)
        aie = ti.indirect_effect(model, task_a, n_mean=2, n=2, n_shots=2)
    attr = ti.attribution_patching(model, pairs)
    assert isinstance(hp, HeadPatchingResult) and isinstance(attr, HeadPatchingResult)
    assert isinstance(patching_fidelity(attr, hp, k=3), Fidelity)
    assert isinstance(ti.activation_patching(model, pairs, site="attn_out"), ActivationPatchingResult)
    head_attention_html(model, pairs.clean, aie.top_heads(2), path=tmp_path / "a.html")
    assert "<html" in (tmp_path / "a.html").read_text().lower()
    assert isinstance(ti.icl_accuracy(model, [task_a], shots=[0, 2], n=4), AccuracyResult)


def test_vector_entry_points(model, task_a, task_b):
    fv = function_vector_from_task(model, task_a, [(0, 1), (1, 0)], n=4, n_shots=2)
    assert isinstance(function_vector_sweep(model, fv, task_a, n=4, n_shots=2), LayerSweepResult)
    tv = ti.task_vector(model, task_a, n=4, n_shots=2)
    assert isinstance(task_vector_sweep(model, tv, task_a, n=4), LayerSweepResult)
    icv = ti.in_context_vector(model, task_a, n=4, n_shots=2)
    si = ti.soft_injection(model, task_a, n_mean=4, n_shots=2, n_fit=4, steps=2)
    zero = ti.make_prompts(model, task_a, n=2, n_shots=0, seed=1)
    with torch.no_grad():
        plain = model(zero.tokens)
        with ti.steer(model, icv.to_steering_vector(coeff=0.0)):  # renormalised: equal up to rounding
            torch.testing.assert_close(model(zero.tokens), plain, atol=1e-4, rtol=1e-4)
        with ti.steer(model, si.to_steering_vector(), query_pos=zero.query_pos):
            model(zero.tokens)
    assert ti.generate(model, zero, steering=fv.to_steering_vector(layer=1), max_new_tokens=2).shape[0] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = ti.compare_methods(model, [task_a], n=4, n_fit=4, n_shots=2, methods=("function_vector", "task_vector"),
                                 fv_k=2)
    assert isinstance(res, ComparisonResult)


def test_representation_entry_points(model, task_a, task_b):
    acts = ti.task_activations(model, [task_a, task_b], shots=[2], n=6, sites=["resid_post", "head_out"])
    assert isinstance(ti.concept_decodability(acts), DecodabilityResult)
    rsa = ti.rsa(acts, site="head_out", n_permutations=5)
    assert isinstance(ti.probe(acts, "task", folds=2), ProbeResult)
    batch = ti.make_prompts(model, task_a, n=3, n_shots=2, seed=2)
    ratio = ti.attention_ratio(model, batch, relevant="demo_output", irrelevant="demo_input")
    assert isinstance(ratio, AttentionRatioResult)
    assert isinstance(compare_heads(torch.randn(2, 4), rsa.head_scores(n_shots=2), ks=(1, 3)), HeadComparisonResult)


def test_heads_entry_points(model, task_a):
    scores = ti.head_scores(model, n=4, length=6)
    assert isinstance(head_overlap({"induction": scores, "random": torch.randn(2, 4)}, ks=(1, 2), model=model),
                      HeadOverlapResult)
    assert ti.token_loss_score(model, "episodes", tasks=[task_a], n=2, n_shots=4) is not None
    abl = ti.head_ablation(model, [task_a], {"induction": scores}, ks=(0, 1), n_random=1, n=4, n_shots=2, loss=False)
    assert abl is not None
