"""Group 1: bitwise and procedural string/sequence tasks (no external data).

Only input: tasks/wordlists/common_words.json (hand-written for tlens_icl).
"""

from __future__ import annotations

import itertools
import string

from _build_common import LIC_HAND, load_wordlist, make_items, write_task

HAND = "hand-written for tlens_icl"
PROC = "procedurally generated for tlens_icl"
CW_SOURCE = "tasks/wordlists/common_words.json (500 common English words, hand-written for tlens_icl); procedural"

BITWISE_OPS = {
    "and": ("AND", lambda a, b: a & b),
    "or": ("OR", lambda a, b: a | b),
    "xor": ("XOR", lambda a, b: a ^ b),
    "nand": ("NAND", lambda a, b: ~(a & b)),
    "nor": ("NOR", lambda a, b: ~(a | b)),
    "xnor": ("XNOR", lambda a, b: ~(a ^ b)),
}

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()

DAYS = "sunday monday tuesday wednesday thursday friday saturday".split()
MONTHS = (
    "january february march april may june july august september october november december"
).split()


def number_words(n: int) -> str:
    """English cardinal for 0..100, hyphenated, no "and" (42 -> forty-two)."""
    if n < 20:
        return ONES[n]
    if n < 100:
        t, u = divmod(n, 10)
        return TENS[t] if u == 0 else f"{TENS[t]}-{ONES[u]}"
    if n == 100:
        return "one hundred"
    raise ValueError(n)


def roman(n: int) -> str:
    out = []
    for value, sym in ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out.append(sym)
            n -= value
    return "".join(out)


def build_bitwise(k: int = 4) -> None:
    width = 2**k
    mask = width - 1
    for key, (op_name, fn) in BITWISE_OPS.items():
        items = []
        for a, b in itertools.product(range(width), repeat=2):
            r = fn(a, b) & mask
            items.append(
                {
                    "input": f"{a:0{k}b} {b:0{k}b}",
                    "output": f"{r:0{k}b}",
                    "meta": {"k": k},
                }
            )
        write_task(
            f"bitwise_{key}",
            "bitwise",
            f"Bitwise {op_name} of two {k}-bit strings (separated by one space); the answer is a {k}-bit string.",
            PROC + " (all ordered pairs of 4-bit operands)",
            LIC_HAND,
            items,
            concept=op_name,
            # e.g. 0000 AND 0000 -> 0000: the input is two operands, never equal to one output
        )


def _sequence_pairs():
    """(input, next) pairs of the ordered sequences used by next_item / prev_item."""
    seqs = []
    seqs.append([(ONES + ["twenty"])[i] for i in range(21)])  # zero..twenty
    seqs.append([str(i) for i in range(0, 31)])  # 0..30
    seqs.append(list(string.ascii_lowercase))
    seqs.append(list(string.ascii_uppercase))
    seqs.append([roman(i) for i in range(1, 21)])  # I..XX
    pairs = []
    for seq in seqs:
        pairs.extend(zip(seq[:-1], seq[1:]))
    for cyc in (DAYS, MONTHS):
        for case in (str.lower, str.title):
            words = [case(w) for w in cyc]
            pairs.extend(zip(words, words[1:] + words[:1]))  # wraps around
    return pairs


def _first_wins(pairs):
    """Keep the first pair for each input.  Single letters I, V, X are both letters and
    roman numerals; the alphabet pairs come first, so the letter reading wins."""
    out, seen = [], set()
    for a, b in pairs:
        if a not in seen:
            seen.add(a)
            out.append((a, b))
    return out


def build_procedural() -> None:
    words = load_wordlist("common_words")
    assert len(words) == len(set(words))

    write_task(
        "uppercase",
        "procedural",
        "Write a lowercase English word in capital letters.",
        CW_SOURCE,
        LIC_HAND,
        make_items((w, w.upper()) for w in words),
    )
    write_task(
        "lowercase",
        "procedural",
        "Write a Title-case English word in lowercase.",
        CW_SOURCE,
        LIC_HAND,
        make_items((w.title(), w) for w in words),
    )
    write_task(
        "capitalize",
        "procedural",
        "Capitalize the first letter of a lowercase English word.",
        CW_SOURCE,
        LIC_HAND,
        make_items((w, w[:1].upper() + w[1:]) for w in words),
    )
    write_task(
        "first_letter",
        "procedural",
        "Give the first letter of an English word.",
        CW_SOURCE,
        LIC_HAND,
        make_items((w, w[0]) for w in words),
    )
    write_task(
        "last_letter",
        "procedural",
        "Give the last letter of an English word.",
        CW_SOURCE,
        LIC_HAND,
        make_items((w, w[-1]) for w in words),
    )
    write_task(
        "word_length",
        "procedural",
        "Give the number of letters in an English word, as digits.",
        CW_SOURCE,
        LIC_HAND,
        make_items((w, str(len(w))) for w in words),
    )
    write_task(
        "next_capital_letter",
        "procedural",
        "Give, as a capital, the letter after the first letter of an English word (cat -> D).",
        CW_SOURCE + " (words starting with z excluded)",
        LIC_HAND,
        make_items((w, chr(ord(w[0]) + 1).upper()) for w in words if w[0] != "z"),
    )
    letters = [(c, chr(ord(c) + 1)) for c in string.ascii_lowercase[:-1]]
    letters += [(c, chr(ord(c) + 1)) for c in string.ascii_uppercase[:-1]]
    write_task(
        "next_letter",
        "procedural",
        "Give the next letter of the alphabet, keeping the case (c -> d, C -> D).",
        PROC,
        LIC_HAND,
        make_items(letters),
    )
    write_task(
        "prev_letter",
        "procedural",
        "Give the previous letter of the alphabet, keeping the case (d -> c, D -> C).",
        PROC,
        LIC_HAND,
        make_items((b, a) for a, b in letters),
    )
    write_task(
        "number_to_word",
        "procedural",
        "Write an integer 0-100 in English words (hyphenated, no 'and': 42 -> forty-two).",
        PROC,
        LIC_HAND,
        make_items((str(n), number_words(n)) for n in range(0, 101)),
    )
    write_task(
        "word_to_number",
        "procedural",
        "Write an English number word (0-100) as digits (forty-two -> 42).",
        PROC,
        LIC_HAND,
        make_items((number_words(n), str(n)) for n in range(0, 101)),
    )
    seq = _sequence_pairs()
    src = (
        PROC + ": number words zero-twenty, digits 0-30, letters a-z and A-Z, roman numerals I-XX, "
        "days of the week and months in lowercase and Title case (cyclic)"
    )
    write_task(
        "next_item",
        "procedural",
        "Give the next item of a well-known ordered sequence (numbers, letters, roman numerals; days and months wrap around).",
        src,
        LIC_HAND,
        make_items(_first_wins(seq)),
    )
    write_task(
        "prev_item",
        "procedural",
        "Give the previous item of a well-known ordered sequence (numbers, letters, roman numerals; days and months wrap around).",
        src,
        LIC_HAND,
        make_items(_first_wins((b, a) for a, b in seq)),
    )
