"""Word-level tokenizer for the embedded models (one token per whitespace-separated word, "\\n" isolated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
STRUCTURE = ["->", "\n"]


def build_tokenizer(words: Sequence[str], name_or_path: str = "icl-tiny"):
    """A ``PreTrainedTokenizerFast`` over ``SPECIALS + STRUCTURE + words`` (ids in that order)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in [*SPECIALS, *STRUCTURE, *words]:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        add_bos_token=True,  # otherwise TransformerLens tries to reload the tokenizer by name
        name_or_path=name_or_path,  # otherwise boot_native fails with KeyError: 'name_or_path'
    )


def save_tokenizer(tok, directory: Path) -> None:
    directory = Path(directory)
    tok.save_pretrained(str(directory))
    # transformers 5 no longer writes this file; keep it for older readers.
    special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    with open(directory / "special_tokens_map.json", "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
