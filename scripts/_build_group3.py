"""Group 3: linear regression (Yousefi et al.-style), reading comprehension with distractors,
part-of-speech selection (Han et al.-style) and extractive choice tasks.

All procedural, from hand-written word lists in tasks/wordlists/ (written for tlens_icl).
Every generator uses its own seeded random.Random, so the output is deterministic.
"""

from __future__ import annotations

import random

from _build_common import LIC_HAND, load_wordlist, make_items, write_task

PROC = "procedurally generated for tlens_icl"


# =============================================================================================
def build_linear_regression(n_groups: int = 40) -> None:
    rng = random.Random(20240601)
    funcs = [(a, b) for a in (-3, -2, -1, 1, 2, 3) for b in range(-5, 6)]
    chosen = sorted(rng.sample(funcs, n_groups))
    items = []
    for a, b in chosen:
        for x in range(0, 21):
            items.append(
                {
                    "input": str(x),
                    "output": str(a * x + b),
                    "group": f"a{a}_b{b}",
                    "meta": {"slope": a, "intercept": b},
                }
            )
    write_task(
        "linear_regression",
        "regression",
        "Each group is one latent integer function y = a*x + b (a in -3..3 except 0, b in -5..5); input x (0..20), "
        "output y, both as plain integers. A prompt takes all demonstrations and the query from one group.",
        PROC + f" ({n_groups} functions drawn with a fixed seed from the 66 (a, b) pairs)",
        LIC_HAND,
        items,
        allow_identity=True,  # y can equal x (e.g. a=1, b=0 is possible; x=2 with 2x-2 ...)
    )


# =============================================================================================
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def build_reading_comprehension(n: int = 320) -> None:
    rng = random.Random(7)
    names = load_wordlist("first_names")
    cities = load_wordlist("cities")
    colors = [c for c in load_wordlist("colors") if c not in ("golden", "silver")]
    occupations = load_wordlist("occupations")
    pets = {"dog", "cat", "rabbit", "hamster", "mouse", "parrot", "turtle", "snake", "lizard", "frog", "horse",
            "goat", "duck", "chicken", "pig", "pigeon", "donkey", "sheep", "cow"}
    animals = [a for a in load_wordlist("animals") if a in pets]
    fruits = load_wordlist("fruits")
    instruments = load_wordlist("instruments")
    sports = load_wordlist("sports")

    # attribute: (values, statement template, question template)
    attrs = {
        "city": (cities, "{p} lives in {v}.", "Where does {p} live?"),
        "color": (colors, "{p}'s favourite colour is {v}.", "What is {p}'s favourite colour?"),
        "occupation": (occupations, "{p} works as {art} {v}.", "What is {p}'s job?"),
        "pet": (animals, "{p} has a pet {v}.", "What kind of pet does {p} have?"),
        "fruit": (fruits, "{p}'s favourite fruit is the {v}.", "What is {p}'s favourite fruit?"),
        "instrument": (instruments, "{p} plays the {v}.", "Which instrument does {p} play?"),
        "sport": (sports, "{p}'s favourite sport is {v}.", "Which sport does {p} like best?"),
    }
    filler = [
        "The weather was cold that morning.",
        "The train was ten minutes late.",
        "The library closes at six o'clock.",
        "It rained for most of the week.",
        "The market was very busy on Saturday.",
        "A new bakery opened on the corner.",
        "The bus stop is next to the park.",
        "The museum is free on Sundays.",
        "The river flooded the old bridge last spring.",
        "Most of the shops were closed for the holiday.",
    ]
    items, seen = [], set()
    attempts = 0
    while len(items) < n:
        attempts += 1
        assert attempts < n * 50
        attr = rng.choice(sorted(attrs))
        values, stmt, quest = attrs[attr]
        people = rng.sample(names, 4)
        target = people[0]
        answer = rng.choice(values)

        def say(person, value, tmpl=stmt):
            return tmpl.format(p=person, v=value, art=_article(value))

        relevant = say(target, answer)
        n_distr = rng.choice((2, 3))
        # at least one same-attribute distractor about another person (a different value)
        distractors = [say(people[1], rng.choice([v for v in values if v != answer]))]
        used = {(target, attr), (people[1], attr)}  # one statement per (person, attribute)
        while len(distractors) < n_distr:
            kind = rng.random()
            if kind < 0.4:  # another attribute of the person asked about
                a2 = rng.choice(sorted(set(attrs) - {attr}))
                if (target, a2) in used:
                    continue
                used.add((target, a2))
                v2, s2, _ = attrs[a2]
                distractors.append(say(target, rng.choice(v2), s2))
            elif kind < 0.7:  # any attribute of a third person
                a2 = rng.choice(sorted(attrs))
                p = people[len(distractors) + 1]
                if (p, a2) in used:
                    continue
                used.add((p, a2))
                v2, s2, _ = attrs[a2]
                distractors.append(say(p, rng.choice(v2), s2))
            else:  # an irrelevant fact
                distractors.append(rng.choice(filler))
        words_in_distr = {w.strip(".,'") for d in distractors for w in d.split()}
        if len(set(distractors)) != len(distractors) or answer in words_in_distr:
            continue
        sentences = [relevant] + distractors
        rng.shuffle(sentences)
        question = quest.format(p=target)
        text = " ".join(sentences) + " Question: " + question
        if text in seen:
            continue
        seen.add(text)
        items.append(
            {
                "input": text,
                "output": answer,
                "meta": {
                    "relevant": relevant,
                    "distractors": distractors,
                    "question": question,
                    "attribute": attr,
                    "relevant_position": sentences.index(relevant),
                },
            }
        )
    write_task(
        "reading_comprehension",
        "reading",
        "Read a short passage (one relevant sentence about the person asked about plus 2-3 distractor sentences: "
        "the same attribute of another person, other attributes of the same person, or irrelevant facts) and "
        "answer the final question with one word. meta.relevant / meta.distractors are exact substrings of the input.",
        PROC + " from hand-written lists (tasks/wordlists/first_names, cities, colors, occupations, animals, "
        "fruits, instruments, sports)",
        LIC_HAND,
        items,
    )


# =============================================================================================
POS_TASKS = {
    "pronoun": ("pos_pronoun", "pronoun", "Output the pronoun of the sentence."),
    "verb": ("pos_verb", "verb", "Output the verb of the sentence."),
    "noun": ("pos_noun", "noun", "Output the noun of the sentence."),
    "adjective": ("pos_adjective", "adjective", "Output the adjective of the sentence."),
    "adverb": ("pos_adverb", "adverb", "Output the adverb of the sentence."),
}


def pos_sentences(n_per_template: int = 110) -> list[dict]:
    """Template sentences with exactly one pronoun, verb, noun, adjective and adverb each
    (the only other word is the article "the").  Returns [{sentence, pronoun, verb, ...}]."""
    lex = load_wordlist("pos_lexicon")
    rng = random.Random(1234)
    rows, seen = [], set()

    def add(sentence, **labels):
        if sentence in seen:
            return False
        seen.add(sentence)
        rows.append({"sentence": sentence, **labels})
        return True

    for template in ("t1", "t2", "t3"):
        count = 0
        while count < n_per_template:
            adv = rng.choice(lex["adverb"])
            adj = rng.choice(lex["adjective"])
            if template in ("t1", "t2"):
                pron = rng.choice(lex["pronoun_subject"])
                verb = rng.choice(lex["verb_past_object"])
                noun = rng.choice(lex["noun_object"])
                if template == "t1":
                    s = f"{pron} {adv} {verb} the {adj} {noun}."
                else:
                    s = f"{pron} {verb} the {adj} {noun} {adv}."
            else:
                pron = rng.choice(lex["pronoun_object"])
                verb = rng.choice(lex["verb_past_animate"])
                noun = rng.choice(lex["noun_animal"])
                s = f"The {adj} {noun} {adv} {verb} {pron}."
            if add(s, pronoun=pron, verb=verb, noun=noun, adjective=adj, adverb=adv, template=template):
                count += 1
    return rows


def build_pos() -> None:
    rows = pos_sentences()
    for key, (name, concept, desc) in POS_TASKS.items():
        items = []
        for r in rows:
            word = r[key]
            assert r["sentence"].split().count(word) + r["sentence"].split().count(word + ".") == 1
            alts = [word.lower()] if word not in ("I", word.lower()) else []
            items.append({"input": r["sentence"], "output": word, "alternatives": alts})
        write_task(
            name,
            "pos",
            desc + " Every sentence has exactly one word of each part of speech (pronoun, verb, noun, adjective, "
            "adverb) plus the article 'the', so the same sentences serve all five pos_* tasks.",
            PROC + ": 3 templates filled from a hand-written lexicon of part-of-speech-unambiguous words "
            "(tasks/wordlists/pos_lexicon.json); labels are exact by construction",
            LIC_HAND,
            make_items(items),
            concept=concept,
        )


# =============================================================================================
CHOICE_CATS = ["animals", "colors", "fruits", "vehicles", "clothing", "instruments", "tools", "body_parts", "furniture"]
CHOOSE = {
    "animal": "animals",
    "color": "colors",
    "fruit": "fruits",
    "vehicle": "vehicles",
    "country": "countries",
}


def build_extractive(n: int = 300) -> None:
    lists = {c: load_wordlist(c) for c in CHOICE_CATS + ["countries", "cities", "first_names"]}
    for key, cat in CHOOSE.items():
        rng = random.Random(f"choose_{key}")
        items, seen = [], set()
        if cat == "countries":
            # capitalised distractors (cities, first names) so that case gives nothing away
            pools = {"cities": lists["cities"], "first_names": lists["first_names"]}
        else:
            pools = {c: lists[c] for c in CHOICE_CATS if c != cat}
        while len(items) < n:
            target = rng.choice(lists[cat])
            c1, c2 = rng.sample(sorted(pools), 2) if len(pools) > 2 else (rng.choice(sorted(pools)),) * 2
            d1 = rng.choice(pools[c1])
            d2 = rng.choice([w for w in pools[c2] if w != d1])
            words = [target, d1, d2]
            rng.shuffle(words)
            text = ", ".join(words)
            if text in seen:
                continue
            seen.add(text)
            items.append({"input": text, "output": target, "meta": {"position": words.index(target)}})
        write_task(
            f"choose_{key}",
            "extractive",
            f"Three comma-separated words, exactly one of which is {'a country' if key == 'country' else 'an ' + key if key[0] in 'aeiou' else 'a ' + key}; output that word.",
            PROC + f" from hand-written category lists (tasks/wordlists/{cat}.json; distractors from "
            + ("cities.json and first_names.json" if cat == "countries" else "the other category lists") + ")",
            LIC_HAND,
            items,
            concept=key,
        )
    words = load_wordlist("common_words")
    for pos_name, idx in (("first", 0), ("middle", 1), ("last", 2)):
        rng = random.Random(f"choose_{pos_name}_of_3")
        items, seen = [], set()
        while len(items) < n:
            trio = rng.sample(words, 3)
            text = ", ".join(trio)
            if text in seen:
                continue
            seen.add(text)
            items.append({"input": text, "output": trio[idx]})
        write_task(
            f"choose_{pos_name}_of_3",
            "extractive",
            f"Three comma-separated words; output the {pos_name} one.",
            PROC + " from tasks/wordlists/common_words.json",
            LIC_HAND,
            items,
            concept=pos_name,
        )


def build_all() -> None:
    build_linear_regression()
    build_reading_comprehension()
    build_pos()
    build_extractive()
