"""Group 2: knowledge tasks derived from offline sources (WordNet, countryinfo, CLDR via babel,
lemminflect, Ding, FreeDict, Apertium) plus hand-written lists (scripts/_build_handdata.py)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import unicodedata

import _build_handdata as hand
import _build_wordnet as wn
from _build_common import LIC_GPL, LIC_HAND, LIC_WORDNET, load_wordlist, make_items, write_task

HAND = "hand-written for tlens_icl"


def zipf(word: str, lang: str = "en") -> float:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, lang)


def ascii_fold(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


def with_folded(alts, out):
    """Alternatives plus accent-free spellings (Bogotá -> Bogota)."""
    res = []
    for a in [out] + list(alts):
        for v in (a, ascii_fold(a)):
            if v != out and v not in res:
                res.append(v)
    return res


def common_words() -> list:
    return load_wordlist("common_words")


def english_vocab(n: int = 6000) -> list:
    """Common words first, then frequent lowercase alphabetic English words (len >= 3)."""
    from wordfreq import top_n_list

    words = list(common_words())
    seen = set(words)
    for w in top_n_list("en", n):
        if w.isalpha() and w.islower() and w.isascii() and len(w) >= 3 and w not in seen:
            seen.add(w)
            words.append(w)
    return words


def is_plain(w: str) -> bool:
    return w.isalpha() and w.islower() and w.isascii() and len(w) >= 3


# =============================================================================================
# Countries
def _countryinfo_by_iso2() -> dict:
    import countryinfo

    d = os.path.join(os.path.dirname(countryinfo.__file__), "data")
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".json"):
            continue
        with open(os.path.join(d, f), encoding="utf-8") as fh:
            x = json.load(fh)
        a2 = (x.get("ISO") or {}).get("alpha2")
        if a2 and a2 not in out:
            out[a2] = x
    return out


def countries() -> list[dict]:
    """[{iso2, name, name_alts, capital, capital_alts, currencies}] for the UN member states."""
    info = _countryinfo_by_iso2()
    rows = []
    for iso in hand.UN_MEMBERS:
        x = info[iso]
        name, name_alts = hand.COUNTRY_NAMES.get(iso, (x["name"], []))
        cap = x.get("capital")
        cap = cap[0] if isinstance(cap, list) else cap
        cap, cap_alts = hand.CAPITALS.get(iso, (cap, []))
        cur = hand.CURRENCIES.get(iso, list(x.get("currencies") or []))
        rows.append(
            {
                "iso2": iso,
                "name": name,
                "name_alts": list(name_alts),
                "capital": cap,
                "capital_alts": list(cap_alts),
                "currencies": cur,
            }
        )
    return rows


COUNTRY_SRC = (
    "countryinfo 1.0.1 (PyPI) names and capitals for the 193 UN member states + Vatican City, "
    "with hand-checked overrides in scripts/_build_handdata.py"
)


def build_countries() -> None:
    rows = countries()
    items = []
    for r in rows:
        items.append({"input": r["name"], "output": r["capital"], "alternatives": with_folded(r["capital_alts"], r["capital"])})
    write_task(
        "country_capital",
        "knowledge",
        "Map a country to its capital city.",
        COUNTRY_SRC,
        "MIT (countryinfo)",
        make_items(items),
    )
    stop = {"city", "of", "the", "san", "saint", "st.", "port", "and", "new"}
    items = []
    for r in rows:
        cap_words = set(r["capital"].lower().replace(",", "").split()) - stop
        name_words = set(r["name"].lower().split()) - stop
        if cap_words & name_words or r["capital"] in r["name"] or r["name"] in r["capital"]:
            continue  # Mexico City, Djibouti, Kuwait City, San Marino, ...: trivially shared names
        items.append({"input": r["capital"], "output": r["name"], "alternatives": with_folded(r["name_alts"], r["name"])})
    # Capitals that more than one country claims as an answer would be ambiguous: drop them.
    caps = [it["input"] for it in items]
    items = [it for it in items if caps.count(it["input"]) == 1]
    write_task(
        "capital_country",
        "knowledge",
        "Map a capital city to its country (capitals that share the country's name are left out).",
        COUNTRY_SRC,
        "MIT (countryinfo)",
        make_items(items),
    )
    from babel import Locale

    en = Locale("en")
    items = []
    for r in rows:
        codes = r["currencies"]
        if not codes:
            continue
        names = [en.currencies.get(c) for c in codes]
        if any(n is None or "(" in n for n in names):
            raise SystemExit(f"currency name problem for {r['name']}: {codes} {names}")
        alts = [codes[0]] + hand.CURRENCY_ALIASES.get(codes[0], [])
        for c, n in zip(codes[1:], names[1:]):
            alts += [n, c]
        items.append({"input": r["name"], "output": names[0], "alternatives": alts})
    write_task(
        "country_currency",
        "knowledge",
        "Map a country to the name of its currency (CLDR English name; the ISO 4217 code is an accepted alternative).",
        "countryinfo 1.0.1 ISO 4217 codes + babel/CLDR English currency names; hand-checked overrides for "
        "recent currency changes in scripts/_build_handdata.py",
        "MIT (countryinfo); Unicode-3.0 (CLDR data via babel)",
        make_items(items),
    )


# =============================================================================================
# WordNet lexical relations
def _morph_variant(a: str, b: str) -> bool:
    return a[:4] == b[:4] or a in b or b in a


def build_antonym() -> None:
    S = wn.synsets()
    pairs: dict[str, set] = {}
    for ss in S.values():
        for sym, tp, to, s, t in ss.pointers:
            if sym != "!" or s == 0 or t == 0:
                continue
            a = ss.words[s - 1]
            b = S[(tp, to)].words[t - 1]
            if not all(x.isalpha() and x.islower() and x.isascii() for x in (a, b)):
                continue
            pairs.setdefault(a, set()).add(b)
            pairs.setdefault(b, set()).add(a)
    block = {frozenset(p.split("-")) for p in hand.ANTONYM_BLOCK}
    items = []
    for a in sorted(pairs):
        if zipf(a) < 3.5:
            continue
        bs = [b for b in pairs[a] if zipf(b) >= 3.5 and not _morph_variant(a, b) and frozenset((a, b)) not in block]
        if not bs:
            continue
        bs.sort(key=lambda b: (-zipf(b), b))
        pref = hand.ANTONYM_PREFER.get(a)
        if pref in bs:
            bs.remove(pref)
            bs.insert(0, pref)
        items.append({"input": a, "output": bs[0], "alternatives": bs[1:]})
    write_task(
        "antonym",
        "knowledge",
        "Map an English word to its antonym.",
        "WordNet 3.0 direct (lexical) antonym pointers, both directions; words with wordfreq zipf>=3.5; "
        "prefix/suffix variants (happy/unhappy) and a hand-made list of sense-specific pairs removed; "
        "most frequent antonym is the output, the others are alternatives",
        LIC_WORDNET,
        make_items(items),
    )


def build_synonym() -> None:
    words = english_vocab(15000)
    found = {}
    for w in words:
        pc = wn.pos_counts().get(w)
        if not pc:
            continue
        pos = max(pc, key=pc.get)
        if pc[pos] < 3:
            continue
        ss = wn.first_synset(w, pos)
        if ss is None:
            continue
        syns = []
        for x in ss.words:
            if not is_plain(x) or x == w or _morph_variant(w, x) or zipf(x) < 3.3:
                continue
            fs = wn.first_synset(x, pos)
            if fs is None or fs.key() != ss.key():
                continue  # keep only mutual first senses
            syns.append(x)
        syns.sort(key=lambda x: (-zipf(x), x))
        if syns:
            found[w] = syns
    items = []
    missing = []
    for w, forced in sorted(hand.SYNONYM_KEEP.items()):
        syns = found.get(w)
        if not syns:
            missing.append(w)
            continue
        syns = list(syns)
        if forced:
            if forced in syns:
                syns.remove(forced)
            syns.insert(0, forced)
        items.append({"input": w, "output": syns[0], "alternatives": syns[1:]})
    if missing:
        print(f"    synonym: {len(missing)} curated inputs have no WordNet candidate in this vocabulary (skipped)")
    write_task(
        "synonym",
        "knowledge",
        "Map an English word to a synonym.",
        "WordNet 3.0: the word's first sense in its most frequent part of speech (SemCor counts); synonyms are "
        "the other single-word lemmas whose own first sense is the same synset (zipf>=3.3, no morphological "
        "variants); inputs hand-selected from the candidates; alternatives = the other synonyms",
        LIC_WORDNET,
        make_items(items),
    )


OCC_BAD = re.compile(
    r"(deity|god|goddess|mythical|legendary|fictional|character|saint|apostle|prophet|patriarch|"
    r"disciple|biblical|angel|demon|giant|hero|heroine|titan|nymph|muse|king|queen|emperor|empress|"
    r"pharaoh|pope|caliph|czar|tsar|sultan|shah|prince|princess|ruler|sovereign|monarch)"
)


PERSON_CAP = 600
OCC_NOT = {"dry", "slave", "hypostasis", "forward", "guard", "center", "wit", "viscountess", "baron", "earl",
           "marquis", "duke", "count", "lady", "lord", "peer", "leader", "master", "father", "mother", "wife",
           "son", "daughter", "brother", "sister", "woman", "man", "person", "victim", "murderer", "assassin",
           "outlaw", "traitor", "spy", "heir", "martyr", "mistress", "hostess", "organist"}


def build_person_occupation() -> None:
    S = wn.synsets()
    items = []
    for ss in S.values():
        if ss.pos != "n" or ss.lexfile != 18:
            continue
        hyps = [S[(tp, to)] for sym, tp, to, _s, _t in ss.pointers if sym == "@i"]
        if not hyps:
            continue
        occs = []
        for h in hyps:
            lemma = h.words[0]
            if not is_plain(lemma) or OCC_BAD.search(lemma):
                continue
            occs.append(lemma)
        if not occs or len(occs) != len(hyps):
            continue
        # Display name: the lemma with the most name parts (e.g. Isaac_Newton over Newton).
        names = [w for w in ss.words if w[:1].isupper()]
        if not names:
            continue
        singles = {w for w in ss.words if "_" not in w}
        names = [
            n for n in names
            if re.fullmatch(r"[A-Z][A-Za-z.'\-]*(_[A-Z][A-Za-z.'\-]*)+", n)
            and n.split("_")[0] not in ("Sir", "Lord", "Lady", "First", "Second", "Third", "Saint", "St.", "Dame", "Dr.")
            and n.split("_")[-1] in singles  # real names (Isaac_Newton + Newton), not nicknames (Iron_Lady)
        ]
        if not names:
            continue
        # Display name: the most frequent such form (Isaac Newton, Cy Young).
        disp = max((wn.display(n) for n in names), key=lambda d: (zipf(d), -len(d)))
        if zipf(disp) < 2.5:  # keep famous people only
            continue
        occs = [o for o in occs if zipf(o) >= 3.0 and o not in OCC_NOT]
        if not occs:
            continue
        occs.sort(key=lambda o: (-zipf(o), o))
        items.append({"input": disp, "output": occs[0], "alternatives": occs[1:], "z": zipf(disp)})
    items = sorted(items, key=lambda it: (-it["z"], it["input"]))[:PERSON_CAP]
    items = [{k: v for k, v in it.items() if k != "z"} for it in items]
    write_task(
        "person_occupation",
        "knowledge",
        "Map a famous person to their occupation.",
        "WordNet 3.0 noun.person instances and their instance hypernyms; mythical, religious and royal "
        "figures removed; the most frequent full-name form (surname also listed alone, so no nicknames), wordfreq zipf>=2.5, the 600 most frequent names; occupations with zipf>=3.0; alternatives = the person's other occupations",
        LIC_WORDNET,
        make_items(items),
    )


LANDMARK_KINDS = {
    "city", "town", "port", "river", "mountain_peak", "mountain", "volcano", "island", "lake", "national_park",
    "desert", "waterfall", "falls", "bridge", "canal", "cathedral", "palace", "castle", "tower", "monument",
    "national_capital", "state_capital", "provincial_capital", "range", "mountain_range", "glacier", "bay",
    "peninsula", "plateau", "valley", "gulf", "strait", "resort", "ruins", "temple", "shrine", "church", "museum",
    "university", "fortress", "archipelago", "sea", "cape", "harbor", "site",
}
LANDMARK_CAP = 80
CONSTITUENT = {"England": "United Kingdom", "Scotland": "United Kingdom", "Wales": "United Kingdom",
               "Northern_Ireland": "United Kingdom"}


def build_landmark_country() -> None:
    S = wn.synsets()
    rows = countries()
    by_name = {}
    for r in rows:
        for n in [r["name"]] + r["name_alts"]:
            by_name[n.replace(" ", "_")] = r["name"]
    by_name.update({"United_States_of_America": "United States", "Britain": "United Kingdom",
                    "Great_Britain": "United Kingdom", "Holland": "Netherlands", "Burma": "Myanmar"})
    # country synsets: instances of "...country"/principality/... whose lemma is a country name
    country_kinds = {"principality", "kingdom", "sultanate", "republic", "city_state", "grand_duchy"}

    def inst_kinds(ss):
        return [S[(tp, to)].words[0] for sym, tp, to, _s, _t in ss.pointers if sym == "@i"]

    country_of_synset = {}
    for key, ss in S.items():
        if ss.pos != "n" or not any("country" in k or k in country_kinds for k in inst_kinds(ss)):
            continue
        for w in ss.words:
            if w in by_name:
                country_of_synset[key] = (by_name[w], None)
                break
            if w in CONSTITUENT:
                country_of_synset[key] = (CONSTITUENT[w], w.replace("_", " "))
                break

    def resolve(key):
        """Country reached by the part-holonym (#p) chain, up to 4 steps; None if none or several."""
        frontier, seen = [key], {key}
        for _ in range(4):
            nxt = []
            for k in frontier:
                for sym, tp, to, _s, _t in S[k].pointers:
                    if sym == "#p" and (tp, to) not in seen:
                        seen.add((tp, to))
                        nxt.append((tp, to))
            hits = {country_of_synset[k] for k in nxt if k in country_of_synset}
            if hits:
                if len({h[0] for h in hits}) == 1:
                    return sorted(hits, key=lambda h: h[1] is not None)[0]
                return None
            frontier = nxt
        return None

    # Every instance synset sharing a name makes the name ambiguous unless all resolve alike.
    by_display: dict = {}
    for key, ss in S.items():
        if ss.pos != "n" or not inst_kinds(ss):
            continue
        for w in ss.words:
            if w[:1].isupper():
                by_display.setdefault(wn.display(w), []).append(key)
    items = []
    for key, ss in S.items():
        if ss.pos != "n" or key in country_of_synset:
            continue
        kinds = inst_kinds(ss)
        if not kinds or not any(k in LANDMARK_KINDS for k in kinds):
            continue
        hit = resolve(key)
        if not hit:
            continue
        names = [w for w in ss.words if w[:1].isupper()]
        if not names:
            continue
        name = wn.display(names[0])
        if not re.fullmatch(r"[A-Z][A-Za-z .'\-]*", name) or zipf(name) < 3.0:
            continue
        others = [k for k in by_display.get(name, []) if k != key]
        if any(resolve(k) is None or resolve(k)[0] != hit[0] for k in others):
            continue  # Newport, Santa Cruz, Lincoln ...: ambiguous
        country, constituent = hit
        if name == country or name in country or country in name:
            continue
        alts = [constituent] if constituent else []
        items.append({"input": name, "output": country, "alternatives": alts, "z": zipf(name)})
    # Balance: at most LANDMARK_CAP places per country (the most frequent names).
    per: dict = {}
    for it in sorted(items, key=lambda it: (-it["z"], it["input"])):
        per.setdefault(it["output"], [])
        if len(per[it["output"]]) < LANDMARK_CAP and it["input"] not in {x["input"] for x in per[it["output"]]}:
            per[it["output"]].append(it)
    items = [{k: v for k, v in it.items() if k != "z"} for lst in per.values() for it in lst]
    write_task(
        "landmark_country",
        "knowledge",
        "Map a well-known place or landmark (city, river, mountain, island, park, building) to its country.",
        "WordNet 3.0 instance nouns of geographic/landmark kinds whose part-holonym chain (<=4 steps) reaches "
        "exactly one UN member state; names with wordfreq zipf>=3.0 that no other WordNet instance shares; at most "
        "80 places per country (most frequent names); English/Scottish/Welsh places map to "
        "United Kingdom (constituent country accepted)",
        LIC_WORDNET,
        make_items(items),
    )


# =============================================================================================
# Inflection
def build_present_past() -> None:
    from lemminflect import getInflection

    items = []
    for w in english_vocab(6000):
        if w in hand.NOT_VERBS or not is_plain(w):
            continue
        pc = wn.pos_counts().get(w, {})
        tot = sum(pc.values())
        v = pc.get("v", 0)
        is_cw = w in set(common_words())
        # verb-primary words; for the common words a solid verb share is enough (paint, cook, drink)
        if tot == 0 or v < 3 or (v / tot < (0.3 if is_cw else 0.6)):
            continue
        past = getInflection(w, tag="VBD")
        if not past:
            continue
        past = [p for p in past if p.isalpha()]
        if not past or past[0] == w and len(past) == 1 and w not in ("cut", "hit", "put", "set", "let", "shut", "hurt", "cost", "quit", "spread", "bet", "burst", "cast"):
            continue
        items.append({"input": w, "output": past[0], "alternatives": past[1:]})
    write_task(
        "present_past",
        "knowledge",
        "Map an English verb (base form) to its simple past tense.",
        "lemminflect 0.2.3 (PyPI; data derived from the NIH SPECIALIST Lexicon) VBD forms for verb-primary "
        "words (WordNet SemCor counts) among tasks/wordlists/common_words.json and the wordfreq top 6,000; "
        "modals/auxiliaries excluded; unchanged pasts (cut->cut) kept as the task allows",
        "MIT (lemminflect); NIH SPECIALIST Lexicon terms",
        make_items(items, allow_identity=True),
        allow_identity=True,
    )


NOUN_LEXFILES = {5, 6, 8, 10, 13, 14, 15, 17, 18, 20, 23, 25, 28}  # animal artifact body communication food group location object person plant quantity shape time


def build_singular_plural() -> None:
    from lemminflect import getInflection, getLemma

    cw = set(common_words())
    items = []
    for w in english_vocab(6000):
        if not is_plain(w) or w in hand.MASS_NOUNS:
            continue
        pc = wn.pos_counts().get(w, {})
        tot = sum(pc.values())
        n = pc.get("n", 0)
        if w in cw:
            ok = n >= 1 and n / max(tot, 1) >= 0.3
        else:
            ok = n >= 5 and n / tot >= 0.7 and wn.lexfile_of_first_sense(w) in NOUN_LEXFILES
        if not ok or w.endswith("s") and w not in cw:
            continue
        first = wn.first_synset(w, "n")
        if first is None or w not in first.words:
            continue  # proper nouns (Italy, February) or not a noun lemma
        lemma = getLemma(w, upos="NOUN")
        if lemma and lemma[0] != w:
            continue  # already a plural (men, people, children)
        pl = getInflection(w, tag="NNS")
        if not pl:
            continue
        pl = [p for p in pl if p.isalpha() and p != w]
        if not pl:
            continue
        items.append({"input": w, "output": pl[0], "alternatives": pl[1:]})
    write_task(
        "singular_plural",
        "knowledge",
        "Map an English count noun to its plural.",
        "lemminflect 0.2.3 NNS forms for noun-primary count nouns (WordNet SemCor counts and first-sense "
        "lexicographer file) among tasks/wordlists/common_words.json and the wordfreq top 6,000; mass nouns and "
        "unchanged plurals (sheep) excluded",
        "MIT (lemminflect); NIH SPECIALIST Lexicon terms",
        make_items(items),
    )


# =============================================================================================
# Translation
def translation_vocab() -> list:
    """English words to translate: the common words, then frequent content words."""
    cw = set(common_words())
    out = []
    for w in english_vocab(3000):
        pc = wn.pos_counts().get(w)
        if w not in cw and (not pc or sum(pc.values()) < 3):
            continue
        out.append(w)
    return out


def _en_pos(w: str) -> list:
    """Parts of speech of an English word, most frequent first (SemCor counts, then WordNet senses)."""
    pc = wn.pos_counts().get(w, {})
    order = [p for p, c in sorted(pc.items(), key=lambda kv: -kv[1]) if c > 0]
    for p in ("n", "v", "a", "r"):
        if p not in order and p in wn.index().get(w, {}):
            order.append(p)
    return order


TARGET_WORD = re.compile(r"^[^\W\d_]+$")


def build_spanish(vocab) -> None:
    lt_proc = shutil.which("lt-proc")
    bidix = "/usr/share/apertium/apertium-eng-spa/eng-spa.autobil.bin"
    if not lt_proc or not os.path.exists(bidix):
        print("    english_spanish: apertium-eng-spa / lttoolbox not installed; skipped")
        return
    tags = {"n": ["<n><sg>"], "v": ["<vblex><inf>"], "a": ["<adj>", "<adj><sint>"], "r": ["<adv>"]}
    queries = []
    for w in vocab:
        for p in _en_pos(w):
            for t in tags[p]:
                queries.append((w, p, f"^{w}{t}$"))
    res = subprocess.run([lt_proc, "-b", bidix], input="\n".join(q[2] for q in queries) + "\n",
                         capture_output=True, text=True, check=True).stdout.split("\n")
    got: dict = {}
    for (w, p, _q), line in zip(queries, res):
        parts = line.strip().strip("^$").split("/")[1:]
        cands = []
        for c in parts:
            if c.startswith("@"):
                continue
            lemma = c.split("<")[0]
            if TARGET_WORD.match(lemma) and lemma not in cands:
                cands.append(lemma)
        if cands:
            got.setdefault(w, {}).setdefault(p, [])
            for c in cands:
                if c not in got[w][p]:
                    got[w][p].append(c)
    items = []
    for w in vocab:
        if w not in got:
            continue
        order = [p for p in _en_pos(w) if p in got[w]]
        main = got[w][order[0]]
        out = main[0]
        alts = main[1:] + [c for p in order[1:] for c in got[w][p]]
        if zipf(out, "es") < 2.0:
            continue
        items.append({"input": w, "output": out, "alternatives": alts[:6]})
    items = _finish_translation(items, "es")
    write_task(
        "english_spanish",
        "knowledge",
        "Translate an English word into Spanish.",
        "Common words (meta.source=hand): hand-written table "
        "scripts/_build_translations_hand.py covering tasks/wordlists/common_words.json. Other frequent English "
        "words (meta.source=dictionary): "
        "Apertium apertium-eng-spa bilingual dictionary (Debian; queried with lt-proc -b in the word's most "
        "frequent part of speech per WordNet SemCor counts; first translation is the output, other senses are "
        "alternatives) for the wordfreq top-3,000 English content words",
        "GPL-2.0-only",
        make_items(items),
    )


def _finish_translation(items, lang):
    """Hand-written translations replace the dictionary ones for the common words; apply hand
    overrides; drop pairs whose translation is spelled like the English word."""
    import _build_translations_hand as th

    hand_tab = th.table()[lang]
    cw = set(common_words())
    over = TRANSLATION_OVERRIDES.get(lang, {})
    out = [
        {"input": w, "output": forms[0], "alternatives": forms[1:], "meta": {"source": "hand"}}
        for w, forms in hand_tab.items()
        if forms[0].lower() != w.lower()
    ]
    for it in items:
        if it["input"] in cw:
            continue
        if it["input"] in over:
            new = over[it["input"]]
            if new is None:
                continue
            alts = [a for a in [it["output"]] + it.get("alternatives", []) if a != new]
            it = {"input": it["input"], "output": new, "alternatives": alts}
        if it["output"].lower() == it["input"].lower():
            continue
        it = dict(it)
        it["meta"] = {"source": "dictionary"}
        out.append(it)
    seen = {it["input"] for it in out}
    for w, new in over.items():
        if new and w not in seen:
            out.append({"input": w, "output": new, "meta": {"source": "hand"}})
    return out


def _read_dictd(stem: str) -> dict:
    """headword -> entry text for a dictd database (index + dict.dz)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def b64(s):
        n = 0
        for ch in s:
            n = n * 64 + alphabet.index(ch)
        return n

    with gzip.open(stem + ".dict.dz", "rb") as fh:
        data = fh.read()
    out = {}
    with open(stem + ".index", encoding="utf-8") as fh:
        for line in fh:
            f = line.rstrip("\n").split("\t")
            if len(f) < 3 or f[0].startswith("00-"):
                continue
            off, ln = b64(f[1]), b64(f[2])
            out.setdefault(f[0], []).append(data[off : off + ln].decode("utf-8"))
    return out


FR_FUNCTION = set("à a au aux de du des le la les un une en dans par pour sur sous avec et ou ne pas se".split())


def build_french(vocab) -> None:
    stem = "/usr/share/dictd/freedict-eng-fra"
    if not os.path.exists(stem + ".index"):
        print("    english_french: dict-freedict-eng-fra not installed; skipped")
        return
    d = _read_dictd(stem)
    items = []
    for w in vocab:
        if w not in d:
            continue
        cands = []
        for entry in d[w]:
            for line in entry.split("\n")[1:]:
                line = re.sub(r"^\s*\d+\.\s*", "", line.strip())
                for c in line.split(","):
                    c = c.strip()
                    if TARGET_WORD.match(c) and c.islower() and c not in cands and c not in FR_FUNCTION:
                        cands.append(c)
        cands = [c for c in cands if zipf(c, "fr") >= 3.0]
        if not cands:
            continue
        cands.sort(key=lambda c: -zipf(c, "fr"))
        items.append({"input": w, "output": cands[0], "alternatives": cands[1:6]})
    items = _finish_translation(items, "fr")
    write_task(
        "english_french",
        "knowledge",
        "Translate an English word into French.",
        "Common words (meta.source=hand): hand-written table "
        "scripts/_build_translations_hand.py covering tasks/wordlists/common_words.json. Other frequent English "
        "words (meta.source=dictionary): "
        "FreeDict eng-fra 0.1.6 (Debian dict-freedict-eng-fra; from Ergane): among the single-word French "
        "translations the most frequent in French (wordfreq zipf>=3) is the output, others are alternatives; "
        "noisier than the hand-written part",
        LIC_GPL,
        make_items(items),
    )


DING_POS = {"n": re.compile(r"\{[mfn]\}|\{pl\}"), "v": re.compile(r"\{v[itr]*\}"), "a": re.compile(r"\{adj\}"),
            "r": re.compile(r"\{adv\}")}


def _clean_ding(s: str) -> str:
    s = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\([^)]*\)|<[^>]*>", " ", s)
    return " ".join(s.split())


def build_german(vocab) -> None:
    path = "/usr/share/trans/de-en"
    if not os.path.exists(path):
        print("    english_german: trans-de-en not installed; skipped")
        return
    want = set(vocab)
    cands: dict = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or " :: " not in line:
                continue
            de, en = line.rstrip("\n").split(" :: ", 1)
            de0, en0 = de.split(" | ")[0], en.split(" | ")[0]
            de_pos = {p for p, rx in DING_POS.items() if rx.search(de0)}
            en_list = [_clean_ding(e) for e in en0.split(";")]
            en_list = [e[3:] if e.startswith("to ") else e for e in en_list]
            de_list = [_clean_ding(g) for g in de0.split(";")]
            de_list = [g[5:] if g.startswith("sich ") else g for g in de_list]
            for ei, e in enumerate(en_list):
                if e not in want:
                    continue
                for gi, g in enumerate(de_list):
                    if not TARGET_WORD.match(g):
                        continue
                    cands.setdefault(e, []).append((g, de_pos, ei, gi, len(en_list)))
    items = []
    for w in vocab:
        if w not in cands:
            continue
        pos = _en_pos(w)
        p0 = pos[0] if pos else "n"

        def score(c):
            g, dpos, ei, gi, n_en = c
            shape_ok = g[0].isupper() if p0 == "n" else g[0].islower()
            # main sense first: the English word heads the entry, the German word heads its side
            return (p0 in dpos and shape_ok, ei == 0 and gi == 0, ei == 0, n_en <= 3, zipf(g, "de"))

        ranked = sorted(cands[w], key=score, reverse=True)
        best = ranked[0]
        if not (score(best)[0] and score(best)[1]) or zipf(best[0], "de") < 3.0:
            continue
        alts = []
        for g, dpos, _ei, _gi, _n in ranked[1:]:
            if g != best[0] and g not in alts and zipf(g, "de") >= 3.0 and dpos & set(pos):
                alts.append(g)
        items.append({"input": w, "output": best[0], "alternatives": alts[:5]})
    items = _finish_translation(items, "de")
    write_task(
        "english_german",
        "knowledge",
        "Translate an English word into German (nouns capitalised).",
        "Common words (meta.source=hand): hand-written table "
        "scripts/_build_translations_hand.py covering tasks/wordlists/common_words.json. Other frequent English "
        "words (meta.source=dictionary): "
        "Ding 1.9 German-English dictionary (Debian trans-de-en): German headwords of entries that list the "
        "English word, restricted to the word's most frequent part of speech (WordNet SemCor counts), ranked by "
        "whether the English and German words head the entry and by German word frequency (wordfreq); only "
        "main-sense pairs are kept; noisier than the hand-written part",
        LIC_GPL,
        make_items(items),
    )


# Hand corrections for translations of basic words (None = drop the word).
TRANSLATION_OVERRIDES: dict = {"fr": {}, "es": {}, "de": {}}


# =============================================================================================
def build_hand_lists() -> None:
    items = [
        {"input": p, "output": c, "alternatives": hand.PRODUCT_COMPANY_ALTS.get(c, [])}
        for p, c in hand.PRODUCT_COMPANY
    ]
    write_task("product_company", "knowledge", "Map a well-known product or brand to the company that makes it.",
               HAND + " (scripts/_build_handdata.py); ownership as of 2025", LIC_HAND, make_items(items))
    items = [
        {"input": p, "output": i, "alternatives": hand.PERSON_INSTRUMENT_ALTS.get(i, [])}
        for p, i in hand.PERSON_INSTRUMENT
    ]
    write_task("person_instrument", "knowledge", "Map a famous musician to the instrument they are best known for.",
               HAND + " (scripts/_build_handdata.py)", LIC_HAND, make_items(items))
    items = [
        {"input": p, "output": s, "alternatives": hand.PERSON_SPORT_ALTS.get(s, [])}
        for p, s in hand.PERSON_SPORT
    ]
    write_task("person_sport", "knowledge", "Map a famous athlete to their sport.",
               HAND + " (scripts/_build_handdata.py)", LIC_HAND, make_items(items))


def build_all() -> None:
    build_hand_lists()
    build_countries()
    build_antonym()
    build_synonym()
    build_present_past()
    build_singular_plural()
    build_person_occupation()
    build_landmark_country()
    vocab = translation_vocab()
    build_spanish(vocab)
    build_french(vocab)
    build_german(vocab)
