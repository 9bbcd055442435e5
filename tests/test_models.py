"""Model loading: embedded by name, local HF folders offline, bridges as-is, clear hub errors."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti


def test_hub_unreachable_is_one_clear_error():
    with pytest.raises(ti.ModelNotAvailableError, match="hub is unreachable.*icl-tiny"):
        ti.load_model("some-org/definitely-not-cached-model")


def test_bridge_passed_through_and_train_mode_rejected(native_model):
    assert ti.load_model(native_model) is native_model
    native_model.train()
    try:
        with pytest.raises(ti.ModelStateError, match="eval"):
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
