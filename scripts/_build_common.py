"""Shared helpers for scripts/build_tasks.py (task-data build for tlens_icl).

Everything here is deterministic: no randomness except through explicitly
seeded ``random.Random`` instances created by the callers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO / "tasks"
WORDLISTS_DIR = TASKS_DIR / "wordlists"

CATEGORIES = ("knowledge", "procedural", "bitwise", "regression", "reading", "pos", "extractive")

# Short licence names used in the task files (full texts in tasks/ATTRIBUTION.md).
LIC_HAND = "MIT"  # same as the project; hand-written or procedural data
LIC_WORDNET = "WordNet 3.0 License"
LIC_GPL = "GPL-2.0-or-later"

# Registry of every task written in this run: name -> summary (for the README).
WRITTEN: dict[str, dict] = {}


def load_wordlist(name: str) -> list:
    """Read ``tasks/wordlists/<name>.json`` (a JSON list)."""
    with open(WORDLISTS_DIR / f"{name}.json", encoding="utf-8") as fh:
        return json.load(fh)


def write_wordlist(name: str, words: list) -> None:
    path = WORDLISTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        fh.write(",\n".join("  " + json.dumps(w, ensure_ascii=False) for w in words))
        fh.write("\n]\n")


def natural_key(text: str):
    """Sort key that orders embedded integers numerically ("2" < "10", "-3" < "1")."""
    parts = re.split(r"(-?\d+)", text)
    key = []
    for p in parts:
        if re.fullmatch(r"-?\d+", p):
            key.append((1, int(p), ""))
        elif p:
            key.append((2, 0, p.casefold() + "\x00" + p))
    return key


def _clean(s) -> str:
    if not isinstance(s, str):
        raise TypeError(f"expected str, got {type(s).__name__}: {s!r}")
    return s


def make_items(pairs: Iterable, *, allow_identity: bool = False) -> list[dict]:
    """Normalise a stream of items and merge duplicate inputs.

    ``pairs`` yields either ``(input, output)`` / ``(input, output, alternatives)``
    tuples or ready dicts.  A later item with an already-seen input (and the same
    group) contributes its output and alternatives as alternatives of the first one.
    """
    merged: dict[tuple, dict] = {}
    for p in pairs:
        if isinstance(p, dict):
            item = dict(p)
        else:
            item = {"input": p[0], "output": p[1]}
            if len(p) > 2 and p[2]:
                item["alternatives"] = list(p[2])
        inp = _clean(item["input"])
        out = _clean(item["output"])
        alts = [a for a in item.get("alternatives", []) if a != out]
        key = (item.get("group"), inp)
        if key in merged:
            first = merged[key]
            extra = [out] + alts
            for a in extra:
                if a != first["output"] and a not in first.setdefault("alternatives", []):
                    first["alternatives"].append(a)
            continue
        seen = []
        for a in alts:
            if a not in seen:
                seen.append(a)
        item["alternatives"] = seen
        merged[key] = item
    items = []
    for item in merged.values():
        if not item.get("alternatives"):
            item.pop("alternatives", None)
        if not allow_identity and item["input"] == item["output"]:
            continue
        items.append(item)
    return items


def check_items(name: str, items: list[dict], *, allow_identity: bool = False) -> None:
    """Enforce the format rules of tasks/schema.json plus the semantic rules."""
    inputs = set()
    for it in items:
        for field in ("input", "output"):
            v = it[field]
            assert isinstance(v, str) and v, (name, it)
            assert v == v.strip(), (name, field, it)
            assert "\n" not in v and "\r" not in v, (name, it)
        for a in it.get("alternatives", []):
            assert isinstance(a, str) and a and a == a.strip() and "\n" not in a, (name, it)
            assert a != it["output"], (name, it)
        if not allow_identity:
            assert it["input"] != it["output"], (name, it)
        key = (it.get("group"), it["input"])
        if "group" not in it:
            key = it["input"]
        assert key not in inputs, (name, "duplicate input", it["input"])
        inputs.add(key)
        meta = it.get("meta") or {}
        for sub in ([meta["relevant"]] if "relevant" in meta else []) + list(meta.get("distractors", [])):
            assert sub in it["input"], (name, "meta span not in input", sub)


def write_task(
    name: str,
    category: str,
    description: str,
    source: str,
    license: str,
    items: list[dict],
    *,
    concept=None,
    allow_identity: bool = False,
    sort: bool = True,
    min_items: int = 10,
) -> dict:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    assert category in CATEGORIES, category
    if sort:
        items = sorted(items, key=lambda it: (natural_key(it.get("group", "")), natural_key(it["input"])))
    check_items(name, items, allow_identity=allow_identity)
    assert len(items) >= min_items, (name, len(items))
    # Stable key order inside each item.
    ordered = []
    for it in items:
        o = {"input": it["input"], "output": it["output"]}
        if it.get("alternatives"):
            o["alternatives"] = list(it["alternatives"])
        if "group" in it:
            o["group"] = it["group"]
        if it.get("meta"):
            o["meta"] = it["meta"]
        ordered.append(o)
    doc = {
        "name": name,
        "category": category,
        "description": description,
        "source": source,
        "license": license,
        "concept": concept,
        "items": ordered,
    }
    path = TASKS_DIR / f"{name}.json"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dump_task(doc))
    WRITTEN[name] = {
        "name": name,
        "category": category,
        "description": description,
        "source": source,
        "license": license,
        "concept": concept,
        "n": len(ordered),
        "example": ordered[len(ordered) // 3],
    }
    print(f"  wrote tasks/{name}.json  ({len(ordered)} items)")
    return doc


def dump_task(doc: dict) -> str:
    """JSON text with one item per line (diff-friendly, still valid JSON)."""
    head = {k: v for k, v in doc.items() if k != "items"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "items": [')
    body = [
        "    " + json.dumps(it, ensure_ascii=False, separators=(", ", ": ")) for it in doc["items"]
    ]
    lines.append(",\n".join(body))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"
