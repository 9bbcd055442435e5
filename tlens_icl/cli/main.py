"""Command line: ``tlens-icl`` / ``python -m tlens_icl``.

Each analysis family has one module here (``FAMILY_COMMANDS``) whose ``add_cli(subparsers)`` registers
its subcommands; every subcommand's ``func(args)`` runs it. The analyses never import this package.
Building the parser imports no torch, TransformerLens or analysis module (``--help`` is instant).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tlens_icl.cli.common import (
    CORRUPTION_NAMES,
    HelpFormatter,
    add_common,
    add_out,
    add_parser,
    at_least,
    add_tasks,
    check_out,
    checkpoint_of,
    finish,
    load_model_for,
    set_threads,
    tasks_of,
)

from tlens_icl.tasks import CATEGORIES  # light: the task module imports no torch

#: Modules of ``tlens_icl.cli`` that register the subcommands of one analysis family.
FAMILY_COMMANDS: list[str] = ["tlens_icl.cli.causal", "tlens_icl.cli.vectors", "tlens_icl.cli.representations",
                             "tlens_icl.cli.heads", "tlens_icl.cli.study", "tlens_icl.cli.forming"]

EPILOG = """examples:
  tlens-icl tasks --category bitwise
  tlens-icl show bitwise_xor --shots 3 --roles
  tlens-icl accuracy bitwise_xor uppercase --shots 0 1 2 4 8 --out outputs/acc
  tlens-icl run --out outputs/run             # the main job; open outputs/run/index.html

Every subcommand with --out writes index.html (summary, figures, raw files) into that folder and refuses a
non-empty folder unless --overwrite. `tlens-icl <command> --help` lists its options with their defaults."""


def _cmd_tasks(args: argparse.Namespace) -> int:
    import json

    from tlens_icl.errors import TlensICLError
    from tlens_icl.tasks import CATEGORIES, is_user_task, list_tasks, load_task, task_dir

    if args.category is not None and args.category not in CATEGORIES:
        raise TlensICLError(f"Unknown category {args.category!r}; use one of {CATEGORIES}.")
    for name in list_tasks():
        if is_user_task(name):
            t = load_task(name)
            category, n, ex = t.category, len(t), (t.items[0].input, t.items[0].output)
        else:  # the raw JSON: listing does not need 20 000 validated items (keeps `tlens-icl tasks` instant)
            doc = json.loads((task_dir() / f"{name}.json").read_text(encoding="utf-8"))
            category, n, ex = doc["category"], len(doc["items"]), (doc["items"][0]["input"], doc["items"][0]["output"])
        if args.category is None or category == args.category:
            print(f"{name:28s} {category:11s} {n:6d}  e.g. {ex[0]!r} -> {ex[1]!r}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from tlens_icl.models import list_models

    for m in list_models():
        where = {True: f" [cached: {m.get('path')}]",
                 False: " [downloaded and converted on first use]"}.get(m.get("cached"), "")
        print(f"{m['name']}: {m.get('description', '')}{where}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from tlens_icl.prompts.batch import ROLES
    from tlens_icl.prompts.pairs import make_prompt_pairs

    (task,) = tasks_of(args)
    model = load_model_for(args, [task])
    pairs = make_prompt_pairs(model, task, n=args.n, n_shots=args.shots, corruption=args.corruption,
                              seed=args.seed, template=args.template)
    for i in range(len(pairs)):
        for side, b in (("clean", pairs.clean), ("corrupted", pairs.corrupted)):
            print(f"--- [{i}] {side} (answer {b.answers[i]!r}) ---")
            print(b.prompts[i])
            if args.roles:
                toks = b.str_tokens(model, i)
                print(" ".join(f"{t!r}:{ROLES[r]}" for t, r in zip(toks, b.roles[i].tolist())))
    return 0


def _cmd_accuracy(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.accuracy import icl_accuracy
    from tlens_icl.results.report import export_section

    out = check_out(args)
    tasks = tasks_of(args)
    model = load_model_for(args, tasks)
    res = icl_accuracy(model, tasks, shots=args.shots, n=args.n, seed=args.seed, template=args.template,
                       progress=args.progress, metric=args.metric, prepend_bos=args.prepend_bos)
    print(res.summary())
    print(res.table().to_string(float_format=lambda x: f"{x:.3f}"))
    if out is not None:
        finish(args, out, [export_section(res, out, "", "accuracy")], title=f"ICL accuracy: {res.model_name}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tlens_icl.workflows.pipeline import run_pipeline, summarize

    out = check_out(args)
    tasks = tasks_of(args)
    model = load_model_for(args, tasks)
    res = run_pipeline(model, tasks=tasks or None, out=out, n=args.n, n_mean=args.n_mean, n_corrupted=args.n_corrupted,
                       n_shots=args.shots, k=args.k, seed=args.seed, progress=args.progress,
                       checkpoint=checkpoint_of(args, out))
    print(summarize(res))
    if out is not None:
        print(f"results written to {out} (open {out / 'index.html'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlens-icl", epilog=EPILOG,
                                     description="In-context learning interpretability on TransformerLens: task "
                                                 "library, ICL curves, causal mediation, function/task vectors, "
                                                 "representations.",
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_parser(sub, "tasks", help="list the task library")
    p.add_argument("--category", default=None, choices=CATEGORIES, help="only the tasks of this category")
    p.set_defaults(func=_cmd_tasks)

    p = add_parser(sub, "models", help="list the models loadable by name (embedded, and downloaded on first use)")
    p.set_defaults(func=_cmd_models)

    p = add_parser(sub, "show", help="print a task's clean/corrupted prompts with token roles")
    add_tasks(p, nargs=None, help="a task name")
    add_common(p, shots=3, n=2, n_help="prompt pairs to print")
    p.add_argument("--corruption", default="shuffled_labels", choices=CORRUPTION_NAMES,
                   help="corruption of the second prompt of each pair")
    p.add_argument("--roles", action="store_true", help="also print every token with its role")
    p.set_defaults(func=_cmd_show)

    p = add_parser(sub, "accuracy", help="ICL accuracy vs number of demonstrations")
    add_tasks(p)
    add_common(p, shots=(0, 1, 2, 4, 8), n=64, n_help="queries per task and shot count")
    p.add_argument("--metric", choices=["exact_match", "first_token"], default="exact_match",
                   help="whole-answer greedy exact match, or first-token top-1 (right only for one-token answers)")
    p.add_argument("--prepend-bos", action=argparse.BooleanOptionalAction, default=None,
                   help="start prompts with BOS (default: the model's own convention)")
    add_out(p)
    p.set_defaults(func=_cmd_accuracy)

    p = add_parser(sub, "run", help="the main job: ICL curve, causal mediation, function vectors, index.html",
                   description="The main job: ICL accuracy by shots, causal mediation (AIE) of every head per task "
                               "family, and each task's function vector added after each block of zero-shot prompts. "
                               "With --out: results, figures, CSVs and index.html.")
    add_tasks(p, nargs="*", help="tasks (default: the embedded model's own tasks, by family)")
    add_common(p, shots=8, n=48, n_help="test queries per task for accuracy and function-vector evaluation",
               shots_help="demonstrations in the mediation prompts and the largest shot count of the ICL curve")
    p.add_argument("--n-mean", type=at_least(1), default=32, help="clean prompts per task for each head's mean activation")
    p.add_argument("--n-corrupted", type=at_least(1), default=16, help="corrupted prompts per task for the AIE")
    p.add_argument("--k", type=at_least(1), default=10, help="heads summed into each function vector")
    add_out(p, resumable=True)
    p.set_defaults(func=_cmd_run)

    for mod in FAMILY_COMMANDS:
        importlib.import_module(mod).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from tlens_icl.errors import TlensICLError

    try:
        if getattr(args, "out", None) is not None:  # an unusable output folder fails now, not after the analysis
            from tlens_icl._validate import output_dir

            output_dir(args.out, "--out")
        if args.command not in ("tasks", "models"):
            set_threads(args)
        return int(args.func(args) or 0)
    except (TlensICLError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
