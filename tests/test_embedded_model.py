"""The shipped embedded ICL model loads offline and really learns in context.

Uses plain TransformerLens calls (the library's own ICL metrics are tested elsewhere), so a
broken checkpoint, tokenizer or config cannot land.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tlens_icl.models.embedded import EMBEDDED_MODELS, load_embedded, load_heldout  # noqa: E402

NAME = "icl-tiny"
N_PROMPTS = 30  # per family


@pytest.fixture(scope="module")
def model():
    return load_embedded(NAME)


@pytest.fixture(scope="module")
def heldout():
    return load_heldout(NAME)


def test_registry_and_files():
    assert NAME in EMBEDDED_MODELS
    meta = EMBEDDED_MODELS[NAME]
    assert meta["default_template"] == "arrow"
    assert isinstance(meta["description"], str) and meta["description"]
    path = Path(meta["path"])
    for rel in ["model.safetensors", "config.json", "card.json", "heldout.json", "tokenizer/tokenizer.json",
                "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"]:
        assert (path / rel).is_file(), rel
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024, f"embedded model is {total / 1e6:.1f} MB"
    card = json.loads((path / "card.json").read_text())
    assert card["heldout_policy"]["word"] and card["heldout_policy"]["bitwise"]
    assert len(card["families"]["word"]) >= 8 and len(card["families"]["bitwise"]) == 6


def test_loads_in_eval_mode(model):
    assert not model.training
    assert all(not m.training for m in model.modules())
    assert model.cfg.n_layers == 4 and model.cfg.d_model == 128


def test_tokenizer_is_word_level(model, heldout):
    tok = model.tokenizer
    bit = heldout["tasks"]["bitwise_and"]["heldout_items"][0]
    word = heldout["word_pool"][0]
    text = f"{bit['input']} -> {bit['output']}\n{word} ->"
    str_toks = model.to_str_tokens(text)
    assert str_toks == ["<bos>", *bit["input"].split(), "->", bit["output"], "\n", word, "->"]
    assert tok.unk_token_id not in model.to_tokens(text)[0].tolist()


def _prompts(heldout, family: str, shots: int, seed: int):
    """N_PROMPTS arrow-template prompts, cycling over the family's tasks."""
    rng = random.Random(seed)
    names = sorted(n for n, t in heldout["tasks"].items() if t["family"] == family)
    out = []
    for i in range(N_PROMPTS):
        items = heldout["tasks"][names[i % len(names)]]["heldout_items"]
        pick = rng.sample(items, shots + 1)
        demos, q = pick[:-1], pick[-1]
        text = "\n".join([f"{d['input']} -> {d['output']}" for d in demos] + [f"{q['input']} ->"])
        out.append((text, q["output"]))
    return out


def _accuracy(model, prompts) -> float:
    tok = model.tokenizer
    texts = [t for t, _ in prompts]
    tokens = model.to_tokens(texts)  # right-padded, BOS prepended
    lengths = torch.tensor([len(model.to_tokens(t)[0]) for t in texts])
    answers = torch.tensor([tok.convert_tokens_to_ids(a) for _, a in prompts])
    assert tok.unk_token_id not in answers.tolist()
    with torch.no_grad():
        logits = model(tokens)
    pred = logits[torch.arange(len(texts)), lengths - 1].argmax(-1)
    return float((pred == answers).float().mean())


@pytest.mark.parametrize("family", ["word", "bitwise"])
def test_icl_curve(model, heldout, family):
    acc0 = _accuracy(model, _prompts(heldout, family, 0, seed=11))
    acc8 = _accuracy(model, _prompts(heldout, family, 8, seed=12))
    assert acc8 >= 0.9, f"{family}: 8-shot accuracy {acc8:.2f}"
    assert acc8 - acc0 >= 0.4, f"{family}: 0-shot {acc0:.2f} vs 8-shot {acc8:.2f}"
