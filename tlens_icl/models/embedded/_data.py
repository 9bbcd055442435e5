"""Training and evaluation data for the embedded ICL models.

Everything here is plain Python (no torch), so it can be reused by evaluation code
and tests. Tasks are read from the project's task library (``tasks/<name>.json``).

Episode layout (the library's "arrow" template, word-level tokens)::

    <bos> x1 -> y1 \\n x2 -> y2 \\n ... \\n xq -> yq

Every answer ``y_i`` is one token and is a training target, so a single episode
trains 0 ... (n_pairs - 1) shots at once.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

ARROW = " ->"
SEP = "\n"
ARROW_TOKEN = "->"
NEWLINE_TOKEN = "\n"


def render_prompt(demos: Sequence[tuple[str, str]], query: str) -> str:
    """The library's "arrow" template: ``x1 -> y1\\nx2 -> y2\\n...\\nxq ->`` (no BOS; the tokenizer adds it)."""
    parts = [f"{x}{ARROW} {y}" for x, y in demos]
    parts.append(f"{query}{ARROW}")
    return SEP.join(parts)


def default_tasks_dir() -> Path:
    """The task library: ``$TLENS_ICL_TASKS_DIR``, else the library's own (:func:`tlens_icl.tasks.task_dir`)."""
    from tlens_icl.tasks import task_dir

    env = os.environ.get("TLENS_ICL_TASKS_DIR")
    return Path(env) if env else task_dir()


def load_task_file(tasks_dir: Path, name: str) -> dict:
    with open(Path(tasks_dir) / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def _single_token(s: str) -> bool:
    return bool(s) and s == s.strip() and not any(ch.isspace() for ch in s) and s != ARROW_TOKEN


@dataclass
class TaskData:
    """One task restricted to what the embedded model uses."""

    name: str
    family: str  # "word" or "bitwise"
    concept: str
    train: list[tuple[str, str]]  # (input, output) pairs allowed in training episodes
    heldout: list[tuple[str, str]]  # pairs used for held-out evaluation prompts
    alternatives: dict[str, list[str]] = field(default_factory=dict)
    n_library_items: int = 0


def load_word_tasks(tasks_dir: Path, names: Sequence[str], pool_size: int, seed: int,
                    wordlist: str = "wordlists/common_words.json",
                    min_coverage: float = 0.6) -> tuple[list[str], list[TaskData]]:
    """Build the shared input pool and the word tasks over it.

    Pool: words of the shared word list that are single tokens; ranked by how many of the
    chosen tasks map them to a single-token output (ties broken by a seeded shuffle), the
    top ``pool_size`` are kept. Each task then uses the pool words it covers. A task that
    covers less than ``min_coverage`` of the pool raises (pick tasks with good coverage).
    For word tasks the held-out set is the same items: a word-level model cannot know an
    unseen word's mapping, so held-out evaluation uses unseen *prompts* (fresh demo sets,
    orders and seeds), see ``HELDOUT_POLICY``.
    """
    with open(Path(tasks_dir) / wordlist, encoding="utf-8") as f:
        words = [w for w in json.load(f) if _single_token(w)]
    maps: dict[str, dict[str, str]] = {}
    alts: dict[str, dict[str, list[str]]] = {}
    meta: dict[str, dict] = {}
    for name in names:
        d = load_task_file(tasks_dir, name)
        meta[name] = d
        m: dict[str, str] = {}
        a: dict[str, list[str]] = {}
        for it in d["items"]:
            x, y = it["input"], it["output"]
            if x in m or not (_single_token(x) and _single_token(y)):
                continue
            m[x] = y
            a[x] = [z for z in it.get("alternatives", []) or [] if _single_token(z) and z != y]
        maps[name], alts[name] = m, a
    rng = random.Random(seed)
    order = list(words)
    rng.shuffle(order)
    cover = {w: sum(w in maps[n] for n in names) for w in order}
    ranked = sorted(order, key=lambda w: -cover[w])  # stable: seeded order within equal coverage
    pool = sorted(ranked[:pool_size])
    tasks = []
    for name in names:
        pairs = [(w, maps[name][w]) for w in pool if w in maps[name]]
        if len(pairs) < min_coverage * len(pool):
            raise ValueError(f"task {name!r} covers only {len(pairs)}/{len(pool)} pool words")
        tasks.append(TaskData(name=name, family="word", concept=str(meta[name].get("concept") or name),
                              train=pairs, heldout=list(pairs),
                              alternatives={x: alts[name][x] for x, _ in pairs if alts[name].get(x)},
                              n_library_items=len(meta[name]["items"])))
    return pool, tasks


def load_bitwise_tasks(tasks_dir: Path, names: Sequence[str], heldout_frac: float,
                       seed: int) -> tuple[list[str], list[TaskData]]:
    """The bitwise family. One set of operand pairs (``heldout_frac`` of all pairs, seeded) is held
    out for every operator: those pairs never occur in training, neither as queries nor as demos."""
    data = {n: load_task_file(tasks_dir, n) for n in names}
    inputs = sorted({it["input"] for n in names for it in data[n]["items"]})
    for n in names:
        have = {it["input"] for it in data[n]["items"]}
        if have != set(inputs):
            raise ValueError(f"bitwise task {n!r} does not cover the same operand pairs as the others")
    rng = random.Random(seed + 1)
    shuffled = list(inputs)
    rng.shuffle(shuffled)
    n_held = int(round(heldout_frac * len(inputs)))
    held = set(shuffled[:n_held])
    tasks = []
    for n in names:
        m = {}
        for it in data[n]["items"]:
            if not _single_token(it["output"]):
                raise ValueError(f"{n}: output {it['output']!r} is not one token")
            m.setdefault(it["input"], it["output"])
        tasks.append(TaskData(name=n, family="bitwise", concept=str(data[n].get("concept") or n),
                              train=[(x, m[x]) for x in inputs if x not in held],
                              heldout=[(x, m[x]) for x in inputs if x in held],
                              n_library_items=len(data[n]["items"])))
    return sorted(held), tasks


def vocabulary(tasks: Iterable[TaskData], extra: Iterable[str] = ()) -> list[str]:
    """Every whitespace-separated token of every input, output and alternative, sorted."""
    toks: set[str] = set(extra)
    for t in tasks:
        for x, y in list(t.train) + list(t.heldout):
            toks.update(x.split())
            toks.add(y)
        for alts in t.alternatives.values():
            toks.update(alts)
    toks.discard(ARROW_TOKEN)
    toks.discard(NEWLINE_TOKEN)
    return sorted(toks)


def sample_prompts(task: TaskData, n: int, shots: int, seed: int, heldout: bool = True
                   ) -> list[tuple[list[tuple[str, str]], str, str]]:
    """``n`` prompts ``(demos, query_input, answer)``: ``shots`` demos and a query, all distinct inputs."""
    items = task.heldout if heldout else task.train
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pick = rng.sample(items, shots + 1)
        out.append((pick[:-1], pick[-1][0], pick[-1][1]))
    return out
