"""Big models: placement over devices (accelerate ``device_map`` with CPU/disk offload), input device.

A model dispatched by accelerate runs each block where the map says, and blocks sent to ``"disk"`` (or
offloaded to the CPU) hold ``meta`` placeholders whose weights are loaded for each call by accelerate's
hooks - the same machinery that splits a model across GPUs. On this CPU-only machine an all-CPU/disk
map is what TransformerLens 4.3 accepts, and it exercises what a split breaks: no single
``cfg.device`` (it reads ``meta`` when the embedding is offloaded), weights that cannot be read
directly (``W_O``, ``W_U``), and hooks on modules whose parameters live elsewhere.

The analyses on the split model must equal those on the same checkpoint loaded whole.
"""
from __future__ import annotations

import pytest
import torch
from conftest import build_hf_model

import tlens_icl as ti
from tlens_icl.analyses.vectors.function_vectors import function_vector_sweep
from tlens_icl.errors import ModelStateError
from tlens_icl.models.adapter import attn_output_bias, device_of, head_output_weights
from tlens_icl.results.base import tensors_equal

#: Which modules go where: embedding, first block and final norm on CPU, the rest offloaded to disk.
SPLITS = {
    "llama": {"model.embed_tokens": "disk", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "disk", "lm_head": "disk"},
    "gpt2": {"transformer.wte": "disk", "transformer.wpe": "cpu", "transformer.drop": "cpu", "transformer.h.0": "disk",
             "transformer.h.1": "cpu", "transformer.h.2": "disk", "transformer.ln_f": "cpu", "lm_head": "disk"},
}


@pytest.fixture(scope="module", params=sorted(SPLITS))
def whole_and_split(request, tokenizer, tmp_path_factory):
    """(the checkpoint loaded whole, the same checkpoint split over CPU and disk), both via ``load_model``."""
    from tlens_icl.models.adapter import tl_version

    if tl_version() < (4, 3):
        pytest.skip("disk offload through boot_transformers(offload_folder=...) needs TransformerLens >= 4.3")
    arch = request.param
    folder = tmp_path_factory.mktemp(f"{arch}-checkpoint")
    build_hf_model(arch, tokenizer, n_layers=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    whole = ti.load_model(str(folder), device="cpu")
    split = ti.load_model(str(folder), device_map=SPLITS[arch], offload_folder=str(tmp_path_factory.mktemp("offload")))
    return arch, whole, split


def test_the_split_model_really_is_offloaded(whole_and_split):
    arch, whole, split = whole_and_split
    placed = set(split.original_model.hf_device_map.values())
    assert placed == {"cpu", "disk"}
    meta = [n for n, p in split.named_parameters() if p.device.type == "meta"]
    assert meta, "nothing was offloaded: the test would not exercise accelerate's hooks"
    # TransformerLens records no usable single device here; the library finds where the tokens go.
    assert device_of(split) == torch.device("cpu") and device_of(whole) == torch.device("cpu")
    with pytest.raises(NotImplementedError):  # what every direct weight read would hit without the adapter
        _ = split.W_O
    for layer in range(split.cfg.n_layers):
        assert torch.equal(head_output_weights(split, layer), whole.W_O[layer].detach())
    assert torch.equal(attn_output_bias(split), attn_output_bias(whole))
    assert all(p.device.type == "meta" for n, p in split.named_parameters() if n in meta), "weights were not put back"


def test_indirect_effects_function_vectors_and_sweeps_equal_the_whole_model(whole_and_split, task_a):
    _, whole, split = whole_and_split
    kw = dict(n_mean=6, n=5, n_shots=3, seed=1, batch_size=4)
    med_whole, med_split = ti.indirect_effect(whole, task_a, **kw), ti.indirect_effect(split, task_a, **kw)
    assert tensors_equal(med_whole, med_split)
    assert torch.isfinite(med_split.effects).all() and med_split.effects.abs().sum() > 0
    fv_whole = ti.function_vector(whole, med_whole, k=3, include_bias=True)
    fv_split = ti.function_vector(split, med_split, k=3, include_bias=True)
    assert torch.equal(fv_whole.vector, fv_split.vector) and fv_split.vector.abs().sum() > 0
    assert fv_whole.decode(whole, k=5) == fv_split.decode(split, k=5)
    sweep = dict(layers=[0, 2], settings=("zero_shot",), n=6, n_shots=3, seed=2, batch_size=4)
    assert tensors_equal(function_vector_sweep(whole, fv_whole, task_a, **sweep),
                         function_vector_sweep(split, fv_split, task_a, **sweep))


def test_decodability_equals_the_whole_model(whole_and_split, task_a, task_b):
    _, whole, split = whole_and_split
    kw = dict(shots=(0, 2), n=6, seed=3, sites=["resid_post", "head_out"], batch_size=4)
    acts_whole, acts_split = ti.task_activations(whole, [task_a, task_b], **kw), ti.task_activations(split, [task_a, task_b], **kw)
    for site in ("resid_post", "head_out"):
        assert torch.equal(getattr(acts_whole, site), getattr(acts_split, site))
        a = ti.concept_decodability(acts_whole, site=site, k=3, n_shuffles=2)
        b = ti.concept_decodability(acts_split, site=site, k=3, n_shuffles=2)
        assert tensors_equal(a, b)


def test_placement_arguments_are_validated_before_loading(tmp_path):
    with pytest.raises(ModelStateError, match="Pass one of them"):
        ti.load_model(str(tmp_path), device="cpu", device_map="auto")
    with pytest.raises(ModelStateError, match="pass device_map"):
        ti.load_model(str(tmp_path), offload_folder=str(tmp_path))
    with pytest.raises(ModelStateError, match="positive int"):
        ti.load_model(str(tmp_path), n_devices=0)
    with pytest.raises(ModelStateError, match="max_memory"):
        ti.load_model(str(tmp_path), max_memory={0: "1GiB"})
    with pytest.raises(ModelStateError, match="embedded model"):
        ti.load_model("icl-tiny", device_map="auto")
