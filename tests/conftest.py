"""Shared fixtures: tiny random models (native + wrapped HF architectures) and toy tasks.

Everything is built in memory; nothing touches the hub (HF_HUB_OFFLINE=1 makes accidental lookups fail
fast). TransformerLens is imported inside fixtures, not at module level.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

#: Under TransformerLens 3.x (the test command's second venv, ``.venv-tl3``) only this subset of the core
#: suite runs, on TL3 bridges, plus ``tests/compat`` (HookedTransformer, SAELens, the cross-major check).
TL3_TIER = {"compat", "test_architecture.py", "test_interop.py", "test_mediation.py", "test_patching.py",
            "test_vectors.py", "test_decodability.py", "test_activations.py"}
if int(version("transformer-lens").split(".")[0]) < 4:
    collect_ignore = sorted(p.name for p in Path(__file__).resolve().parent.iterdir()
                            if p.name.startswith("test_") and p.name not in TL3_TIER)

N_WORDS = 24
INPUTS = [f"in{i}" for i in range(N_WORDS)]
OUTPUTS_A = [f"a{i}" for i in range(N_WORDS)]
OUTPUTS_B = [f"b{i}" for i in range(N_WORDS)]
EXTRA = ["->", "\n", "Q:", "A:", "x", "y", "z", "two", "words", "multi"]
ARCHS = ["native", "gpt2", "pythia", "llama", "gemma2"]


def make_tokenizer(words: list[str] | None = None):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = words or (INPUTS + OUTPUTS_A + OUTPUTS_B + EXTRA)
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"), pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", add_bos_token=True, name_or_path="tlens-icl-test-wordlevel")


def build_model(arch: str, tok=None, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 128, seed: int = 0):
    """A tiny random model of ``arch`` wrapped as a TransformerBridge, in eval mode."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    tok = tok or make_tokenizer()
    V = len(tok)
    torch.manual_seed(seed)
    if arch == "native":
        cfg = TransformerBridgeConfig(d_model=d_model, d_head=d_model // n_heads, n_heads=n_heads, n_layers=n_layers,
                                      n_ctx=n_ctx, d_vocab=V, act_fn="gelu", seed=seed)
        return TransformerBridge.boot_native(cfg, tokenizer=tok).eval()
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads, **ids))
        name = "GPT2LMHeadModel"
    elif arch == "pythia":
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers,
                                              num_attention_heads=n_heads, intermediate_size=4 * d_model,
                                              max_position_embeddings=n_ctx, rotary_pct=0.25, **ids))
        name = "GPTNeoXForCausalLM"
    elif arch == "llama":
        hf = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers,
                                          num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                                          intermediate_size=4 * d_model, max_position_embeddings=n_ctx, **ids))
        name = "LlamaForCausalLM"
    elif arch == "gemma2":
        hf = Gemma2ForCausalLM(Gemma2Config(vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers,
                                            num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                                            head_dim=d_model // n_heads, intermediate_size=4 * d_model,
                                            max_position_embeddings=n_ctx, sliding_window=n_ctx,
                                            query_pre_attn_scalar=d_model // n_heads, **ids))
        name = "Gemma2ForCausalLM"
    else:
        raise ValueError(arch)
    hf.eval()
    return build_bridge_from_module(hf, name, hf_config=hf.config, tokenizer=tok).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session", params=ARCHS)
def any_model(request, tokenizer):
    """Each tiny architecture in turn: native, GPT-2, Pythia, Llama (GQA), Gemma2 (GQA)."""
    return build_model(request.param, tokenizer)


@pytest.fixture(scope="session")
def native_model(tokenizer):
    return build_model("native", tokenizer)


@pytest.fixture(scope="session")
def task_a():
    from tlens_icl import Task

    return Task.from_pairs("toy_a", list(zip(INPUTS, OUTPUTS_A)), category="custom", description="toy task A")


@pytest.fixture(scope="session")
def task_b():
    from tlens_icl import Task

    return Task.from_pairs("toy_b", list(zip(INPUTS, OUTPUTS_B)), category="custom", description="toy task B")


@pytest.fixture(scope="session")
def embedded_model():
    import tlens_icl

    return tlens_icl.load_model("icl-tiny")
