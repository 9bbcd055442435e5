#!/usr/bin/env python3
"""Rebuild every ICL task file in tasks/*.json (deterministic: fixed seeds, sorted items).

Usage (from the repository root):

    python -m venv .venv-build && .venv-build/bin/pip install -e ".[build-data]"
    apt-get install -y wordnet-base trans-de-en dict-freedict-eng-fra apertium-eng-spa lttoolbox
    python scripts/build_tasks.py               # all tasks
    python scripts/build_tasks.py --only group1 # just one group (group1, group2, group3)

Python packages used at build time only (the `build-data` extra): wordfreq, countryinfo,
babel, lemminflect, inflect, jsonschema.

Debian packages read at build time:
  * wordnet-base        /usr/share/wordnet/{data,index}.*         (antonym, synonym, person_occupation,
                                                                    landmark_country)
  * trans-de-en         /usr/share/trans/de-en                     (english_german, GPL-2.0-or-later)
  * dict-freedict-eng-fra /usr/share/dictd/freedict-eng-fra.*      (english_french, GPL-2.0-or-later)
  * apertium-eng-spa + lttoolbox  (lt-proc; english_spanish, GPL-2.0-or-later)

Group 1 (procedural + bitwise) needs nothing but tasks/wordlists/common_words.json.
Hand-written data lives in tasks/wordlists/*.json and scripts/_build_handdata.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _build_common as common  # noqa: E402


def validate_all() -> int:
    """Validate every tasks/*.json against tasks/schema.json (needs jsonschema)."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover
        print("jsonschema not installed; skipping schema validation")
        return 0
    schema = json.loads((common.TASKS_DIR / "schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    n = 0
    for path in sorted(common.TASKS_DIR.glob("*.json")):
        if path.name == "schema.json":
            continue
        doc = json.loads(path.read_text(encoding="utf-8"))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            for e in errors[:5]:
                print(f"{path.name}: {list(e.path)}: {e.message}")
            raise SystemExit(f"schema validation failed for {path.name}")
        assert doc["name"] == path.stem, path
        common.check_items(doc["name"], doc["items"], allow_identity=True)
        n += 1
    print(f"validated {n} task files against tasks/schema.json")
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["group1", "group2", "group3"], action="append")
    ap.add_argument("--no-readme", action="store_true", help="do not regenerate tasks/README.md")
    args = ap.parse_args(argv)
    groups = args.only or ["group1", "group2", "group3"]

    if "group1" in groups:
        import _build_procedural as proc

        print("group 1: bitwise + procedural")
        proc.build_bitwise()
        proc.build_procedural()
    if "group2" in groups:
        import _build_knowledge as know

        print("group 2: knowledge")
        know.build_all()
    if "group3" in groups:
        import _build_group3 as g3

        print("group 3: regression, reading, pos, extractive")
        g3.build_all()

    validate_all()
    if not args.no_readme and set(groups) == {"group1", "group2", "group3"}:
        import _build_readme

        _build_readme.write_readme()


if __name__ == "__main__":
    main()
