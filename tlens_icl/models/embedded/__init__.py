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


def load_embedded(name: str = DEFAULT_MODEL, device: Any = None, step: int | None = None):
    """Load an embedded model as a ``TransformerBridge`` in eval mode (fp32 weights), offline.

    ``step``: a training checkpoint (see :func:`checkpoint_steps`) instead of the final weights.
    """
    return load_dir(embedded_model_path(name), name=name, device=device, step=step)


def is_model_dir(path: Any) -> bool:
    """True for a folder written by the training script (``card.json``, ``config.json``, ``tokenizer/``)."""
    p = Path(path)
    return (p / "card.json").is_file() and (p / "config.json").is_file() and (p / "tokenizer").is_dir()


def read_card(path: Any) -> dict[str, Any]:
    with open(Path(path) / "card.json", encoding="utf-8") as f:
        card = json.load(f)
    card.setdefault("default_template", "arrow")
    return card


def checkpoint_index(path: Any) -> dict[str, Any]:
    """``checkpoints/index.json`` of a model folder: steps, files and each one's logged held-out accuracy."""
    f = Path(path) / "checkpoints" / "index.json"
    if not f.is_file():
        raise FileNotFoundError(f"{Path(path)} has no training checkpoints (no checkpoints/index.json); retrain with "
                                "python -m tlens_icl.models.embedded.train to keep them.")
    with open(f, encoding="utf-8") as fh:
        index = json.load(fh)
    if not isinstance(index.get("checkpoints"), list) or not all("step" in c and "file" in c for c in index["checkpoints"]):
        raise ValueError(f"{f} is not a checkpoint index (needs a 'checkpoints' list of {{step, file}}).")
    return index


def checkpoint_steps(name_or_path: Any = DEFAULT_MODEL) -> list[int]:
    """Training steps with kept weights (the last is the final model); [] when none were kept."""
    path = embedded_model_path(name_or_path) if str(name_or_path) in EMBEDDED_MODELS else Path(name_or_path)
    try:
        return [int(c["step"]) for c in checkpoint_index(path)["checkpoints"]]
    except FileNotFoundError:
        return []


def weights_file(path: Path, step: int | None) -> Path:
    if step is None:
        return path / "model.safetensors"
    entries = {int(c["step"]): c["file"] for c in checkpoint_index(path)["checkpoints"]}
    if int(step) not in entries:
        raise KeyError(f"No checkpoint at step {step} in {path}; available steps: {sorted(entries)}.")
    return path / entries[int(step)]


def load_dir(path: Any, name: str = "embedded", device: Any = None, step: int | None = None):
    """Load a model directory written by ``python -m tlens_icl.models.embedded.train`` (final or ``step``)."""
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
    state = {k: v.to(torch.float32) for k, v in load_file(str(weights_file(path, step))).items()}
    model.load_state_dict(state, strict=True)
    if device is not None:
        model = model.to(device)
    return model.eval()


def __getattr__(name: str) -> Any:
    """``train_model`` (:func:`tlens_icl.models.embedded.train.train_model`), imported on first use so that
    ``python -m tlens_icl.models.embedded.train`` does not find its module already imported by this package."""
    if name == "train_model":
        from tlens_icl.models.embedded.train import train_model

        return train_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_MODEL", "EMBEDDED_MODELS", "checkpoint_index", "checkpoint_steps", "embedded_model_path",
           "is_model_dir", "load_dir", "load_embedded", "load_heldout", "read_card", "train_model", "weights_file"]
