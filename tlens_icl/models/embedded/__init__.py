"""Embedded in-context-learning models shipped inside the package.

``load_embedded("icl-tiny")`` returns a TransformerLens 4 ``TransformerBridge`` (eval mode) of a
tiny model trained by this project (``python -m tlens_icl.models.embedded.train``) that infers a latent
task from demonstrations. It needs no network: weights, config and word-level tokenizer live
next to this file. ``EMBEDDED_MODELS`` maps each name to its model card (``card.json``) plus
``"path"``; its ``"default_template"`` is the prompt template the model was trained on.

Importing this module does not import torch or transformer_lens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "icl-tiny"


def _discover() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for card_path in sorted(_HERE.glob("*/card.json")):
        with open(card_path, encoding="utf-8") as f:
            card = json.load(f)
        name = card.get("name", card_path.parent.name)
        card.setdefault("default_template", "arrow")
        card.setdefault("description", name)
        card["path"] = str(card_path.parent)
        models[name] = card
    return models


#: name -> model card (``description``, ``path``, ``default_template``, ``accuracy_heldout``, ...).
EMBEDDED_MODELS: dict[str, dict[str, Any]] = _discover()


def embedded_model_path(name: str = DEFAULT_MODEL) -> Path:
    if name not in EMBEDDED_MODELS:
        raise KeyError(f"Unknown embedded model {name!r}; available: {sorted(EMBEDDED_MODELS)}")
    return Path(EMBEDDED_MODELS[name]["path"])


def load_heldout(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The held-out items and policy saved with the model (``heldout.json``)."""
    with open(embedded_model_path(name) / EMBEDDED_MODELS[name].get("heldout_file", "heldout.json"),
              encoding="utf-8") as f:
        return json.load(f)


def load_embedded(name: str = DEFAULT_MODEL, device: Any = None):
    """Load an embedded model as a ``TransformerBridge`` in eval mode (fp32 weights), offline."""
    return _load_dir(embedded_model_path(name), name=name, device=device)


def _load_dir(path: Any, name: str = "embedded", device: Any = None):
    """Load a model directory written by ``python -m tlens_icl.models.embedded.train``."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import load_file
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    path = Path(path)
    with open(path / "config.json", encoding="utf-8") as f:
        cfg_dict = dict(json.load(f))
    pos = cfg_dict.pop("positional_embedding_type", "standard")
    cfg = TransformerBridgeConfig(**cfg_dict, init_weights=False)
    cfg.positional_embedding_type = pos  # not a constructor argument in TransformerLens 4.3
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer, model_name=name)
    state = {k: v.to(torch.float32) for k, v in load_file(str(path / "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    if device is not None:
        model = model.to(device)
    return model.eval()


__all__ = ["DEFAULT_MODEL", "EMBEDDED_MODELS", "embedded_model_path", "load_embedded", "load_heldout"]
