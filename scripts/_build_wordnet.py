"""Minimal reader for the WordNet 3.0 database files (wndb(5) format).

Reads /usr/share/wordnet/{data,index}.{noun,verb,adj,adv} as installed by the
Debian package ``wordnet-base``.  Only what the task builders need.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

WN_DIR = os.environ.get("WNSEARCHDIR", "/usr/share/wordnet")
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


@dataclass
class Synset:
    pos: str  # n v a r (satellites "s" are folded into "a")
    offset: int
    lexfile: int
    words: list  # lemma strings as stored ("Isaac_Newton", "hot")
    pointers: list  # (symbol, target_pos, target_offset, source_word_idx, target_word_idx)
    gloss: str
    tagcounts: dict = field(default_factory=dict)

    def key(self):
        return (self.pos, self.offset)


def _strip_marker(word: str) -> str:
    # adjective syntactic markers: "galore(ip)", "beautiful(a)", "elect(p)"
    if word.endswith(")") and "(" in word:
        word = word[: word.index("(")]
    return word


@functools.lru_cache(maxsize=None)
def synsets() -> dict:
    """All synsets keyed by (pos, offset)."""
    out = {}
    for pos, fname in POS_FILES.items():
        with open(os.path.join(WN_DIR, f"data.{fname}"), encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue  # licence header
                body, _, gloss = line.partition(" | ")
                f = body.split()
                offset, lexfile = int(f[0]), int(f[1])
                n_words = int(f[3], 16)
                words = [_strip_marker(f[4 + 2 * i]) for i in range(n_words)]
                i = 4 + 2 * n_words
                n_ptr = int(f[i])
                i += 1
                ptrs = []
                for _ in range(n_ptr):
                    sym, toff, tpos, st = f[i : i + 4]
                    i += 4
                    tpos = "a" if tpos == "s" else tpos
                    ptrs.append((sym, tpos, int(toff), int(st[:2], 16), int(st[2:], 16)))
                out[(pos, offset)] = Synset(pos, offset, lexfile, words, ptrs, gloss.strip())
    return out


@functools.lru_cache(maxsize=None)
def index() -> dict:
    """lemma (lowercase, underscores) -> {pos: (tagsense_cnt, [offsets in sense order])}."""
    out: dict = {}
    for pos, fname in POS_FILES.items():
        with open(os.path.join(WN_DIR, f"index.{fname}"), encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                f = line.split()
                lemma = f[0]
                synset_cnt = int(f[2])
                p_cnt = int(f[3])
                j = 4 + p_cnt
                # fields: sense_cnt tagsense_cnt offsets...
                tagsense = int(f[j + 1])
                offsets = [int(x) for x in f[j + 2 : j + 2 + synset_cnt]]
                out.setdefault(lemma, {})[pos] = (tagsense, offsets)
    return out


def pos_profile(word: str) -> dict:
    """{pos: tagsense_cnt} for a lemma (counts of sense-tagged occurrences in SemCor)."""
    return {p: v[0] for p, v in index().get(word.lower(), {}).items()}


def primary_pos(word: str):
    prof = pos_profile(word)
    if not prof:
        return None
    best = max(prof.items(), key=lambda kv: (kv[1], {"n": 3, "v": 2, "a": 1, "r": 0}[kv[0]]))
    return best[0]


def first_synset(word: str, pos: str):
    entry = index().get(word.lower(), {}).get(pos)
    if not entry or not entry[1]:
        return None
    return synsets()[(pos, entry[1][0])]


def lexfile_of_first_sense(word: str, pos: str = "n"):
    ss = first_synset(word, pos)
    return None if ss is None else ss.lexfile


def display(lemma: str) -> str:
    return lemma.replace("_", " ")


@functools.lru_cache(maxsize=None)
def pos_counts() -> dict:
    """lemma -> {pos: SemCor tag count summed over senses} (from cntlist.rev)."""
    ss_pos = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
    out: dict = {}
    with open(os.path.join(WN_DIR, "cntlist.rev"), encoding="latin-1") as fh:
        for line in fh:
            key, _sense, cnt = line.split()
            lemma, _, rest = key.partition("%")
            pos = ss_pos[rest[0]]
            d = out.setdefault(lemma.lower(), {})
            d[pos] = d.get(pos, 0) + int(cnt)
    return out


def pos_share(word: str, pos: str) -> float:
    """Share of the SemCor occurrences of ``word`` that are tagged with ``pos`` (0 if unseen)."""
    d = pos_counts().get(word.lower(), {})
    tot = sum(d.values())
    return d.get(pos, 0) / tot if tot else 0.0
