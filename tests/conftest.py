"""Shared fixtures: tiny random models (native + wrapped HF architectures) and toy tasks that look like real use.

* The shared ``tokenizer`` is a **byte-level BPE** trained in memory (``tokenizers``) on the task words: two
  words in three are single tokens, the rest split into 2-10 pieces, so answers can be multi-token, many
  answers share a first token (``'Ġ'``, as with a real LLM's digits) and prompts in one batch differ in
  length (right padding; never read ``[:, -1]``).
* Every tiny architecture has **non-zero biases** and perturbed norm weights (native, GPT-2, Pythia, Llama
  and Gemma-2 with attention/MLP biases switched on), so a bias counted twice or dropped changes numbers.
* ``word_tokenizer`` / ``word_model``: the old word-level tokenizer, for the few tests about word-level
  behaviour (unknown tokens, a token that must be the answer).

Everything is built in memory; nothing touches the hub (HF_HUB_OFFLINE=1 makes accidental lookups fail
fast). TransformerLens is imported inside fixtures, not at module level.
"""
from __future__ import annotations

import contextlib

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
TL3_TIER = {"compat", "test_architecture.py", "test_architectures.py", "test_interop.py", "test_mediation.py",
            "test_patching.py", "test_vectors.py", "test_steering.py", "test_decodability.py", "test_activations.py",
            "test_doctests.py"}
if int(version("transformer-lens").split(".")[0]) < 4:
    collect_ignore = sorted(p.name for p in Path(__file__).resolve().parent.iterdir()
                            if p.name.startswith("test_") and p.name not in TL3_TIER)

#: Test tiers (markers registered in pyproject.toml; README, Development). Given here: ``tl3`` to everything in
#: tests/compat, and ``slow`` by :data:`SLOW`; ``real_llm`` and ``notebook`` are given in the test modules.
TESTS_DIR = Path(__file__).resolve().parent
COMPAT_DIR = TESTS_DIR / "compat"
#: Tests over ~20 s on 2 busy cores (``--durations``), by module (its path under tests/): test functions by name
#: (every parameter), and ``fixture:NAME`` for every test using a module fixture whose setup is the cost (a
#: training run, the main job). tests/test_tiers.py checks that each name still exists.
SLOW = {
    "test_readme.py": {"test_every_python_block_runs", "test_every_cli_line_runs"},  # ~300 s, ~80 s
    "test_notebooks.py": {"test_notebook_runs"},  # 15-200 s per notebook
    "test_figure_layout.py": {"test_every_figure_reads_at_any_depth"},  # ~35 s per depth
    "test_pipeline.py": {"fixture:run_dir", "test_model_card_script_measures_with_the_library"},  # ~35 s, ~40 s
    "test_forming.py": {"fixture:run"},  # a training run, ~50 s
    "test_heads_training.py": {"fixture:trained"},  # a training run, ~40 s
    "compat/test_saelens.py": {"test_sae_notebook_runs_small"},  # ~40 s (TransformerLens 3 only)
    "compat/test_icl_tiny.py": {"fixture:tl4_reference"},  # the TL 4 reference run in .venv, ~25 s
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.path.resolve()
        if COMPAT_DIR in path.parents:
            item.add_marker(pytest.mark.tl3)
        slow = SLOW.get(path.relative_to(TESTS_DIR).as_posix() if TESTS_DIR in path.parents else "", ())
        name = getattr(item, "originalname", item.name)
        if name in slow or any(f"fixture:{f}" in slow for f in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


#: The test running now (set before its fixtures), for the real-LLM guard below.
_RUNNING: list = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _RUNNING[0] = item


@pytest.fixture(scope="session", autouse=True)
def _real_llm_guard():
    """A test that loads a named real LLM (``tlens_icl.models.gguf.DOWNLOADS``) must carry the ``real_llm`` marker:
    the load fails the test otherwise, before any download, so ``-m "not real_llm"`` never fetches a model."""
    from tlens_icl.models import gguf

    real, original = frozenset(gguf.DOWNLOADS), gguf.download_folder

    def guarded(name, *args, **kwargs):
        item = _RUNNING[0]
        if name in real and item is not None and item.get_closest_marker("real_llm") is None:
            pytest.fail(f"{item.nodeid} loads the real LLM {name!r} but is not marked real_llm "
                        "(pytestmark = pytest.mark.real_llm, or marks= on its parameter)", pytrace=False)
        return original(name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "download_folder", guarded)
        yield


# Word-level vocabulary (``word_tokenizer``): every word one token.
N_WORDS = 24
WORD_INPUTS = [f"in{i}" for i in range(N_WORDS)]
WORD_OUTPUTS_A = [f"a{i}" for i in range(N_WORDS)]
WORD_OUTPUTS_B = [f"b{i}" for i in range(N_WORDS)]
EXTRA = ["->", "\n", "Q:", "A:", "x", "y", "z", "two", "words", "multi"]
# BPE tasks: toy_a maps an animal to its upper-case name, toy_b to a colour.
INPUTS = ["cat", "dog", "horse", "elephant", "butterfly", "owl", "tiger", "dolphin", "bee", "giraffe", "ant",
          "crocodile", "fox", "hippopotamus", "yak", "penguin", "rabbit", "ox", "kangaroo", "eel", "squirrel", "bat",
          "flamingo", "gnu"]
OUTPUTS_A = [w.upper() for w in INPUTS]
OUTPUTS_B = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "grey", "violet",
             "gold", "silver", "cyan", "magenta", "teal", "navy", "olive", "maroon", "beige", "coral", "ivory", "indigo"]
ARCHS = ["native", "gpt2", "pythia", "llama", "gemma2", "gemma3", "qwen2"]
#: Logit scale of the architectures built like real models (see :func:`sharpen_logits`).
SHARP_LOGITS = {"gemma3": 6.0, "qwen2": 5.0}
#: Gemma 3's sliding window in the tiny models: shorter than every test prompt, so the local layers differ
#: from global ones (the real Gemma-3-270M: 512).
GEMMA3_WINDOW = 6
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def rounding_tol(ref: torch.Tensor, tol: float = 1e-5) -> float:
    """``tol`` for values of magnitude <= 10, growing with the largest ``|ref|`` beyond (float32 rounds relative
    to the magnitude: log-probabilities of sharp logits reach ~40, where routes differ by ~2e-5 from rounding)."""
    return tol * max(1.0, float(ref.detach().abs().max()) / 10)


def make_tokenizer(words: list[str] | None = None):
    """A word-level tokenizer over ``words`` (default: the word-level task vocabulary); unknown words -> <unk>."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = words or (WORD_INPUTS + WORD_OUTPUTS_A + WORD_OUTPUTS_B + EXTRA)
    specials = SPECIALS + ["<unk>"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"), pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", add_bos_token=True, name_or_path="tlens-icl-test-wordlevel")


def make_bpe_tokenizer():
    """A GPT-2-style byte-level BPE trained in memory on prompts of the toy tasks (deterministic).

    Words at indices 2, 5, 8, ... never occur in the training text, so they (and their upper-case and
    colour answers) split into several tokens; the others are single tokens. No text is ever unknown.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = []
    for i, (x, a, b) in enumerate(zip(INPUTS, OUTPUTS_A, OUTPUTS_B)):
        if i % 3 != 2:
            lines += [f"Q: {x}\nA: {a}\n\n", f"{x} -> {b}\n", f"Q: {x}\nA: {b}\n\n", f"{x} -> {a}\n"] * 3
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   add_bos_token=True, name_or_path="tlens-icl-test-bpe")


def randomize_biases(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Give every bias a random value and perturb every norm weight (in place, seeded)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            parts = name.split(".")
            if parts[-1] == "bias" or parts[-1].startswith("b_"):
                p.copy_(scale * torch.randn(p.shape, generator=gen))
            elif parts[-1] == "weight" and any("norm" in s or s.startswith("ln") for s in parts):
                p.add_(scale * torch.randn(p.shape, generator=gen))


def build_model(arch: str, tok=None, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 256,
                seed: int = 0, biases: bool = True):
    """A tiny random model of ``arch`` wrapped as a TransformerBridge, in eval mode, with random biases."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    tok = tok or make_bpe_tokenizer()
    if arch == "native":
        torch.manual_seed(seed)
        cfg = TransformerBridgeConfig(d_model=d_model, d_head=d_model // n_heads, n_heads=n_heads, n_layers=n_layers,
                                      n_ctx=n_ctx, d_vocab=len(tok), act_fn="gelu", seed=seed)
        model = TransformerBridge.boot_native(cfg, tokenizer=tok)
        if biases:
            randomize_biases(model, seed)
        return model.eval()
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    hf = build_hf_model(arch, tok, n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=n_ctx, seed=seed,
                        biases=biases)
    return build_bridge_from_module(hf, type(hf).__name__, hf_config=hf.config, tokenizer=tok).eval()


def build_hf_model(arch: str, tok, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 256,
                   seed: int = 0, biases: bool = True):
    """The Hugging Face model behind :func:`build_model` (not wrapped; ``save_pretrained`` works on it)."""
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    V = len(tok)
    torch.manual_seed(seed)
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads, **ids))
    elif arch == "pythia":
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers,
                                              num_attention_heads=n_heads, intermediate_size=4 * d_model,
                                              max_position_embeddings=n_ctx, rotary_pct=0.25, **ids))
    elif arch == "llama":
        hf = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers,
                                          num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                                          intermediate_size=4 * d_model, max_position_embeddings=n_ctx,
                                          attention_bias=biases, mlp_bias=biases, **ids))
    elif arch == "gemma2":
        hf = Gemma2ForCausalLM(Gemma2Config(vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers,
                                            num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                                            head_dim=d_model // n_heads, intermediate_size=4 * d_model,
                                            max_position_embeddings=n_ctx, sliding_window=n_ctx,
                                            query_pre_attn_scalar=d_model // n_heads, attention_bias=biases, **ids))
    elif arch == "gemma3":  # Gemma-3-270M's configuration, scaled down (see GEMMA3_WINDOW)
        hf = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=V, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
            num_key_value_heads=1, head_dim=256, intermediate_size=4 * d_model, max_position_embeddings=n_ctx,
            sliding_window=GEMMA3_WINDOW, sliding_window_pattern=2, query_pre_attn_scalar=256,
            attn_logit_softcapping=None, final_logit_softcapping=None, rope_theta=1_000_000.0,
            rope_local_base_freq=10_000.0, tie_word_embeddings=True, attention_bias=False, initializer_range=0.1, **ids))
    elif arch == "qwen2":  # Qwen2.5-0.5B's heads (14 query / 2 key-value, d_head 64 -> 8), q/k/v biases, untied
        hf = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=V, hidden_size=14 * 8, num_hidden_layers=n_layers, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=4 * 14 * 8, max_position_embeddings=n_ctx, rope_theta=1_000_000.0,
            tie_word_embeddings=False, initializer_range=0.1, **ids))
    else:
        raise ValueError(arch)
    if biases:
        randomize_biases(hf, seed)
    if arch in SHARP_LOGITS:
        sharpen_logits(hf, SHARP_LOGITS[arch])
    return hf.eval()


def sharpen_logits(hf, factor: float) -> None:
    """Multiply the logits by ``factor`` (through the final norm's weight), like a trained LLM's (std ~5, not ~0.2).

    On near-uniform outputs (a random model over a 2,000-token vocabulary) a patching effect is ~1e-5 in
    probability: below the tests' tolerance, so a wrong route could pass them.
    """
    norm = hf.model.norm
    with torch.no_grad():
        if type(norm).__name__.startswith("Gemma"):  # Gemma's RMSNorm scales by (1 + weight)
            norm.weight.copy_(factor * (1 + norm.weight) - 1)
        else:
            norm.weight.mul_(factor)


@pytest.fixture(scope="session")
def tokenizer():
    """The shared byte-level BPE tokenizer (variable-length, multi-token answers)."""
    return make_bpe_tokenizer()


@pytest.fixture(scope="session")
def word_tokenizer():
    """The word-level tokenizer (every toy word one token; unknown words exist)."""
    return make_tokenizer()


@pytest.fixture(scope="session", params=ARCHS)
def any_model(request, tokenizer):
    """Each tiny architecture in turn: native, GPT-2, Pythia, Llama (GQA), Gemma2 (GQA); random biases, BPE."""
    return build_model(request.param, tokenizer)


@pytest.fixture(scope="session")
def native_model(tokenizer):
    return build_model("native", tokenizer)


@pytest.fixture(scope="session")
def word_model(word_tokenizer):
    """A native model with the word-level tokenizer."""
    return build_model("native", word_tokenizer)


@pytest.fixture()
def forward_counter(native_model):
    """A list that grows by one per forward pass of ``native_model`` (bad input must be refused before any)."""
    calls = []
    native_model.add_hook("hook_embed", lambda x, hook: calls.append(1))
    yield calls
    native_model.reset_hooks()


@pytest.fixture(scope="session")
def task_a():
    from tlens_icl import Task

    return Task.from_pairs("toy_a", list(zip(INPUTS, OUTPUTS_A)), category="custom", description="toy task A")


@pytest.fixture(scope="session")
def task_b():
    from tlens_icl import Task

    return Task.from_pairs("toy_b", list(zip(INPUTS, OUTPUTS_B)), category="custom", description="toy task B")


@pytest.fixture(scope="session")
def word_task_a():
    from tlens_icl import Task

    return Task.from_pairs("word_a", list(zip(WORD_INPUTS, WORD_OUTPUTS_A)), description="word-level toy task A")


@pytest.fixture(scope="session")
def word_task_b():
    from tlens_icl import Task

    return Task.from_pairs("word_b", list(zip(WORD_INPUTS, WORD_OUTPUTS_B)), description="word-level toy task B")


@pytest.fixture(scope="session")
def embedded_model():
    import tlens_icl

    return tlens_icl.load_model("icl-tiny")


def hand_function_vector(model, mean_z, heads, include_bias=False):
    """Todd et al.'s function vector computed by hand from the model's own modules: per layer, the heads'
    ``mean_z @ W_O`` (plus ``b_O`` once with ``include_bias``); where the block normalizes its attention output
    before the residual stream (Gemma 2/3's ``post_attention_layernorm``, called as Hugging Face wrote it), what
    they write through it: ``norm(every head + b_O) - norm(the other heads + b_O unless included)``."""
    import torch

    vec = torch.zeros(model.cfg.d_model)
    hf_layers = getattr(getattr(getattr(model, "original_model", None), "model", None), "layers", None)
    with torch.no_grad():
        for layer in sorted({l for l, _ in heads}):
            W_O = model.W_O[layer].detach().float()
            try:
                b = model.b_O[layer].detach().float()
            except (AttributeError, TypeError):
                b = torch.zeros(model.cfg.d_model)
            ours = [h for l, h in heads if l == layer]
            mine = sum(mean_z[layer, h].float() @ W_O[h] for h in ours) + (b if include_bias else 0)
            norm = getattr(hf_layers[layer], "post_attention_layernorm", None) if hf_layers is not None else None
            if norm is None or not hasattr(hf_layers[layer], "pre_feedforward_layernorm"):  # no post-attention norm
                vec += mine
                continue
            norm = getattr(norm, "original_component", norm)
            rest = sum((mean_z[layer, h].float() @ W_O[h] for h in range(W_O.shape[0]) if h not in ours),
                       torch.zeros(model.cfg.d_model)) + (0 if include_bias else b)
            vec += norm(rest + mine) - norm(rest)
    return vec


@contextlib.contextmanager
def without_typechecker():
    """What a user sees: turn off the test suite's runtime type checker (``--jaxtyping-packages``), which users do
    not run and which would otherwise answer a wrongly typed argument before the library's own check."""
    from jaxtyping import config

    before = config.jaxtyping_disable
    config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        config.update("jaxtyping_disable", before)
