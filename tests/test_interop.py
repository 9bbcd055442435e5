"""Reuse inside TransformerLens projects (both TL majors): the model adapter, ActivationCache inputs,
steering-vector interchange, and the README quick start."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import rounding_tol

import tlens_icl as ti
from tlens_icl.analyses.vectors.task_vectors import task_vector_from_prompts
from tlens_icl.analyses.representations.activations import ActivationSet
from tlens_icl.analyses.vectors.common import mean_head_activations
from tlens_icl.analyses.vectors.function_vectors import function_vector_from_heads
from tlens_icl.analyses.vectors.steering import SteeringVector
from tlens_icl.prompts.spec import stream_seed
from tlens_icl.engine import hooks
from tlens_icl.engine.query import max_sequence_length
from tlens_icl.errors import ModelStateError, TlensICLError
from tlens_icl.models import adapter

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5


# ---- the adapter on bridges ----------------------------------------------------------------------------
def test_adapter_reports_the_bridge_family(any_model):
    caps = adapter.capabilities(any_model)
    major = adapter.tl_major()
    assert caps.family == ("tl4_bridge" if major >= 4 else "tl3_bridge") == adapter.family(any_model)
    assert caps.position_ids and caps.mask_4d and not caps.start_at_layer_skips and not caps.resid_mid_edit
    assert adapter.capabilities(any_model) is caps  # measured once, cached
    assert adapter.device_of(any_model) == torch.device("cpu") and adapter.dtype_of(any_model) == torch.float32
    bias = adapter.attn_output_bias(any_model)
    assert bias is None or bias.shape == (any_model.cfg.n_layers, any_model.cfg.d_model)


def test_forward_refuses_a_kv_cache_or_start_layer_on_a_bridge(native_model):
    tokens = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ModelStateError, match="past_kv_cache"):
        adapter.forward(native_model, tokens, past_kv_cache=object())
    with pytest.raises(ModelStateError, match="start at a layer"):
        adapter.forward(native_model, tokens, start_at_layer=1)
    logits = adapter.forward(native_model, tokens, position_ids=torch.arange(4)[None])
    assert logits.shape == (1, 4, native_model.cfg.d_vocab)


def test_four_d_mask_reproduces_the_restricted_attention(any_model):
    """The float 4-D mask route: copies of the query that see only the prefix give the query's logits."""
    copies = 3
    # within a sliding window (Gemma 3's is shorter than 10 tokens): an explicit 4-D mask replaces HF's window mask,
    # so the engine's copies route refuses longer inputs on such models (tests/test_engine.py)
    width = min(10, max_sequence_length(any_model) - copies)
    q = width - 3
    tokens = torch.randint(4, 40, (2, width))
    tokens[:, 0] = 1
    ext = torch.cat([tokens, tokens[:, q:q + 1].expand(-1, copies)], 1)
    keep = torch.ones(width + copies, width + copies, dtype=torch.bool).tril()
    keep[width:] = False
    keep[width:, :q] = True
    keep[width + torch.arange(copies), width + torch.arange(copies)] = True
    pos = torch.cat([torch.arange(width), torch.full((copies,), q)])[None].expand(2, -1)
    with torch.no_grad():
        ref = any_model(tokens)[:, q]
        out = adapter.forward(any_model, ext, position_ids=pos,
                              attention_mask=adapter.additive_mask(keep.expand(2, -1, -1), torch.float32))[:, width:]
    torch.testing.assert_close(out, ref[:, None].expand(-1, copies, -1), atol=rounding_tol(ref), rtol=0)


def test_warn_once_per_model_and_key(native_model):
    adapter._WARNED.pop(native_model, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            adapter.warn_once(native_model, "k", "first")
        adapter.warn_once(native_model, "other", "second")
    assert [str(w.message) for w in caught] == ["first", "second"]


def test_a_pattern_edit_the_model_would_ignore_raises(native_model, task_a, monkeypatch):
    """Planted: pretend the model ignores pattern edits (as TL3 native bridges do); editing must raise."""
    batch = ti.make_prompts(native_model, task_a, n=2, n_shots=2, seed=0)
    edit = [(hooks.pattern(0), lambda p, hook: p * 0.5)]
    if not adapter.pattern_edits_ignored(native_model):  # TL4: honoured, no error (TL3 native: tests/compat)
        with hooks.checked_hooks(native_model, edit):
            native_model(batch.tokens)
    monkeypatch.setattr(adapter.ModelHandle, "pattern_edits_ignored", property(lambda self: True))
    with pytest.raises(ModelStateError, match="ignores hook_pattern edits"):
        with hooks.checked_hooks(native_model, edit):
            native_model(batch.tokens)
    with hooks.checked_hooks(native_model, [(hooks.pattern(0), lambda p, hook: None)]):  # reading is fine
        native_model(batch.tokens)


def test_fast_path_routes_through_the_mask_when_pattern_edits_are_ignored(native_model, task_a, monkeypatch):
    """With pattern edits unavailable the fast path uses the 4-D mask, and still equals the loop."""
    naive = ti.indirect_effect(native_model, task_a, method="naive", n_mean=4, n=3, n_shots=3)
    caps = adapter.capabilities(native_model)
    monkeypatch.setitem(adapter._CAPS, native_model, adapter.Capabilities(**{**caps.__dict__, "pattern_edit": False}))
    fast = ti.indirect_effect(native_model, task_a, method="fast", n_mean=4, n=3, n_shots=3)
    assert fast.method == "fast"
    torch.testing.assert_close(fast.effects, naive.effects, atol=TOL, rtol=0)


# ---- ActivationCache inputs ------------------------------------------------------------------------------
def test_collect_activations_from_a_cache_equals_the_library_pass(any_model, task_a):
    batch = ti.make_prompts(any_model, task_a, n=5, n_shots=3, seed=4)
    with torch.no_grad():
        _, cache = any_model.run_with_cache(batch.tokens)
    for position in ("query", "demo_output"):
        own = ti.collect_activations(any_model, batch, sites=["resid_post", "z", "head_out", "attn_out"],
                                     position=position, batch_size=2)
        read = ti.collect_activations(any_model, batch, sites=["resid_post", "z", "head_out", "attn_out"],
                                      position=position, cache=cache)
        for site in own.sites:
            torch.testing.assert_close(getattr(read, site), getattr(own, site), atol=TOL, rtol=0)
        assert read.tasks == own.tasks and torch.equal(read.n_shots, own.n_shots)


def test_a_cache_feeds_decodability_rsa_and_probing(native_model, task_a, task_b):
    sets = []
    for task in (task_a, task_b):
        batch = ti.make_prompts(native_model, task, n=6, n_shots=3, seed=5)
        with torch.no_grad():
            _, cache = native_model.run_with_cache(batch.tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
        sets.append(ti.collect_activations(native_model, batch, cache=cache, task=task.name, condition="clean"))
    from_cache = ActivationSet.concat(sets)
    own = ti.task_activations(native_model, [task_a, task_b], shots=[3], n=6, seed=5)
    torch.testing.assert_close(from_cache.resid_post, own.resid_post, atol=TOL, rtol=0)
    assert ti.concept_decodability(from_cache).correct.shape == ti.concept_decodability(own).correct.shape
    torch.testing.assert_close(ti.rsa(from_cache, n_permutations=10).rho, ti.rsa(own, n_permutations=10).rho,
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(ti.probe(from_cache, "task", folds=3).score, ti.probe(own, "task", folds=3).score,
                               atol=1e-6, rtol=0)


def test_mediation_means_from_a_cache_equal_the_computed_ones(native_model, task_a):
    computed = ti.indirect_effect(native_model, task_a, n_mean=5, n=3, n_shots=3)
    mean_batch = ti.make_prompts(native_model, task_a, n=5, n_shots=3, seed=stream_seed(0, "mean"))  # the mean stream
    with torch.no_grad():
        _, cache = native_model.run_with_cache(mean_batch.tokens, names_filter=lambda n: n.endswith("hook_z"))
    mean_z = mean_head_activations(native_model, mean_batch, cache=cache)
    torch.testing.assert_close(mean_z, computed.mean_z[0], atol=TOL, rtol=0)
    given = ti.indirect_effect(native_model, task_a, n=3, n_shots=3, mean_z=mean_z)
    torch.testing.assert_close(given.effects, computed.effects, atol=TOL, rtol=0)
    assert given.info["mean_z"] == "given"
    with pytest.raises(TlensICLError, match="mean_z must be"):
        ti.indirect_effect(native_model, task_a, n=3, n_shots=3, mean_z=mean_z.expand(2, -1, -1, -1))
    with pytest.raises(TlensICLError, match="filter_correct"):
        ti.indirect_effect(native_model, task_a, n=3, n_shots=3, mean_z=mean_z, filter_correct=True)


def test_a_wrong_cache_is_refused(native_model, embedded_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=4, n_shots=3, seed=4)
    other = batch.select([1, 0, 3, 2])  # the same prompts in another order: same shape, other tokens per row
    with torch.no_grad():
        _, cache = native_model.run_with_cache(batch.tokens)
        _, other_cache = native_model.run_with_cache(other.tokens)
        _, unbatched = native_model.run_with_cache(batch.tokens[:1], remove_batch_dim=True)
        _, filtered = native_model.run_with_cache(batch.tokens, names_filter=lambda n: n.endswith("hook_z"))
        _, other_model_cache = embedded_model.run_with_cache(batch.tokens)
    assert not torch.equal(batch.tokens, other.tokens) and batch.tokens.shape == other.tokens.shape
    with pytest.raises(TlensICLError, match="other prompts"):
        ti.collect_activations(native_model, batch, cache=other_cache)
    with pytest.raises(TlensICLError, match="shape"):
        ti.collect_activations(native_model, batch, cache=unbatched)
    with pytest.raises(TlensICLError, match="no 'blocks.0.hook_resid_post'"):
        ti.collect_activations(native_model, batch, cache=filtered)
    with pytest.raises(TlensICLError, match="different model"):
        ti.collect_activations(native_model, batch, cache=other_model_cache)
    with pytest.raises(TlensICLError, match="ActivationCache"):
        ti.collect_activations(native_model, batch, cache={"blocks.0.hook_resid_post": torch.zeros(1)}.items())
    with pytest.raises(TlensICLError, match="PromptBatch"):
        ti.collect_activations(native_model, ti.make_prompt_pairs(native_model, task_a, n=2, n_shots=2), cache=cache)


# ---- steering vectors --------------------------------------------------------------------------------------
def test_function_vector_round_trips_as_a_plain_steering_vector(native_model, task_a, tmp_path):
    batch = ti.make_prompts(native_model, task_a, n=4, n_shots=3, seed=1)
    fv = function_vector_from_heads(native_model, mean_head_activations(native_model, batch), [(0, 1), (1, 2)],
                                    task="toy_a").with_layer(0)
    sv = fv.to_steering_vector(coeff=2.0)
    hook_name, vector = sv  # a plain pair
    assert hook_name == "blocks.0.hook_resid_post" and torch.equal(vector, fv.vector) and sv.mode == "add"
    path = sv.save(tmp_path / "fv")
    loaded = SteeringVector.load(path, model=native_model)
    assert loaded.hook_name == hook_name and torch.equal(loaded.vector, vector) and loaded.coeff == 2.0
    assert loaded.metadata["task"] == "toy_a" and loaded.metadata["heads"] == [[0, 1], [1, 2]]
    zero = ti.make_prompts(native_model, task_a, n=3, n_shots=0, seed=2)
    toks = zero.tokens[:1, : int(zero.query_pos[0]) + 1]  # one unpadded prompt: the query is the last token
    with torch.no_grad():
        plain_tl = native_model.run_with_hooks(toks, fwd_hooks=[loaded.as_hook()])
        with ti.steer(native_model, fv.to_steering_vector(coeff=2.0)):
            ours = native_model(toks)
    torch.testing.assert_close(plain_tl, ours, atol=0, rtol=0)

    def by_hand(act, hook):  # what another project writes from the plain pair
        act = act.clone()
        act[:, -1] += loaded.coeff * vector
        return act

    with torch.no_grad():
        torch.testing.assert_close(native_model.run_with_hooks(toks, fwd_hooks=[(hook_name, by_hand)]), ours,
                                   atol=0, rtol=0)


def test_task_vector_exports_as_a_replacement(native_model, task_a, tmp_path):
    batch = ti.make_prompts(native_model, task_a, n=3, n_shots=3, seed=0)
    tv = task_vector_from_prompts(native_model, batch.select([0])).with_layer(1)
    sv = ti.SteeringVector.load(tv.to_steering_vector().save(tmp_path / "tv.safetensors"))
    assert sv.mode == "replace" and sv.hook_name == "blocks.1.hook_resid_post" and torch.equal(sv.vector, tv.at(1))
    zero = ti.make_prompts(native_model, task_a, n=1, n_shots=0, seed=3)
    toks = zero.tokens[:, : int(zero.query_pos[0]) + 1]
    with torch.no_grad():
        tl = native_model.run_with_hooks(toks, fwd_hooks=[sv.as_hook()])
        with ti.steer(native_model, ti.SteeringVector.from_task_vector(tv)):
            ours = native_model(toks)
    torch.testing.assert_close(tl, ours, atol=0, rtol=0)


def test_a_bad_steering_file_is_refused(native_model, tmp_path):
    from safetensors.torch import save_file

    good = ti.SteeringVector(torch.ones(native_model.cfg.d_model), 1)
    path = good.save(tmp_path / "good")
    with pytest.raises(TlensICLError, match="not a tlens_icl steering vector"):
        save_file({"vector": torch.ones(3)}, str(tmp_path / "plain.safetensors"))
        SteeringVector.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(TlensICLError, match="not a readable"):
        SteeringVector.load(tmp_path / "junk.safetensors")
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        doc = json.loads(f.metadata()["tlens_icl_steering"])
    for change, match in (({"hook_names": ["blocks.1.attn.hook_z"]}, "hook_names"), ({"mode": "scale"}, "mode"),
                          ({"site": "resid_mid"}, "site"), ({"layers": [1, 1]}, "repeat"), ({"shape": [3]}, "shape"),
                          ({"version": 99}, "version")):
        save_file({"vector": torch.ones(native_model.cfg.d_model)}, str(tmp_path / "bad.safetensors"),
                  metadata={"tlens_icl_steering": json.dumps({**doc, **change})})
        with pytest.raises(TlensICLError, match=match):
            SteeringVector.load(tmp_path / "bad.safetensors")
    with pytest.raises(TlensICLError, match="NaN"):
        ti.SteeringVector(torch.full((4,), float("nan")), 0)
    with pytest.raises(TlensICLError, match="d_model"):
        ti.SteeringVector(torch.ones(3), 0).check_model(native_model)
    with pytest.raises(TlensICLError, match="past the model"):
        ti.SteeringVector(torch.ones(native_model.cfg.d_model), 7).check_model(native_model)


# ---- README -------------------------------------------------------------------------------------------------
def test_readme_quick_start_runs_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_section_code("Quick start (Python)"), "README quick start", "exec"), namespace)
    assert adapter.family(namespace["model"]) in ("tl4_bridge", "tl3_bridge")
    assert namespace["acc"].table() is not None


def readme_section_code(title: str) -> str:
    """The python blocks of one README section, joined."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


def test_readme_cache_and_steering_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_section_code("TransformerLens 3 and SAELens"), "README TL3 section", "exec"), namespace)
    assert namespace["aie"].info["mean_z"] == "given" and namespace["hook_name"] == "blocks.1.hook_resid_post"
    assert (tmp_path / "fv_xor.safetensors").exists() and namespace["steered"].shape[-1] == namespace["model"].cfg.d_vocab
