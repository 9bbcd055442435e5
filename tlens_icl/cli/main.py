"""Command line: ``tlens-icl`` / ``python -m tlens_icl``.

Each analysis family has one module here (``FAMILY_COMMANDS``) whose ``add_cli(subparsers)`` registers
its subcommands; every subcommand's ``func(args)`` runs it. The analyses never import this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tlens_icl.cli.common import add_common

#: Modules of ``tlens_icl.cli`` that register the subcommands of one analysis family.
FAMILY_COMMANDS: list[str] = ["tlens_icl.cli.causal", "tlens_icl.cli.vectors", "tlens_icl.cli.representations",
                             "tlens_icl.cli.heads"]


def _threads() -> None:
    # 2-core machines: one intra-op thread avoids OpenMP oversubscription (3-12x slower otherwise).
    import torch

    torch.set_num_threads(int(os.environ.get("TLENS_ICL_THREADS", "1")))


def _cmd_tasks(args: argparse.Namespace) -> int:
    from tlens_icl.tasks import list_tasks, load_task

    for name in list_tasks(args.category):
        t = load_task(name)
        ex = t.items[0]
        print(f"{name:28s} {t.category:11s} {len(t):6d}  e.g. {ex.input!r} -> {ex.output!r}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from tlens_icl.models import list_models

    for m in list_models():
        print(f"{m['name']}: {m.get('description', '')}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from tlens_icl.models import load_model
    from tlens_icl.prompts.batch import ROLES
    from tlens_icl.prompts.pairs import make_prompt_pairs

    model = load_model(args.model)
    pairs = make_prompt_pairs(args.task, model, n=args.n, n_shots=args.shots, corruption=args.corruption,
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
    from tlens_icl.models import load_model

    model = load_model(args.model)
    res = icl_accuracy(model, args.task, n_shots=args.shots, n=args.n, seed=args.seed, template=args.template)
    print(res.table().to_string(float_format=lambda x: f"{x:.3f}"))
    if args.out:
        print(f"saved to {res.export(args.out, 'accuracy')}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tlens_icl.models import load_model
    from tlens_icl.pipeline import run_pipeline, summarize

    model = load_model(args.model)
    res = run_pipeline(model, tasks=args.tasks, out=args.out, n=args.n, seed=args.seed, progress=args.progress)
    print(summarize(res))
    if args.out:
        print(f"results written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlens-icl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list tasks")
    p.add_argument("--category", default=None)
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("models", help="list the embedded models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("show", help="print a task's clean/corrupted prompts with token roles")
    p.add_argument("task")
    add_common(p, shots_default=3)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--corruption", default="shuffled_labels")
    p.add_argument("--roles", action="store_true", help="also print every token with its role")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("accuracy", help="ICL accuracy vs number of shots")
    p.add_argument("task", nargs="+")
    add_common(p, shots_default=None)
    p.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default=None, help="folder for the saved result and plot")
    p.set_defaults(func=_cmd_accuracy)

    p = sub.add_parser("run", help="main job: ICL curve, causal mediation and function vectors")
    p.add_argument("--model", default="icl-tiny")
    p.add_argument("--tasks", nargs="+", default=None, help="default: the embedded model's tasks")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/run")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=_cmd_run)

    for mod in FAMILY_COMMANDS:
        importlib.import_module(mod).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    _threads()
    from tlens_icl.errors import TlensICLError

    try:
        if getattr(args, "out", None) is not None:  # an unusable output folder fails now, not after the analysis
            from tlens_icl._validate import output_dir

            output_dir(args.out, "--out")
        return int(args.func(args) or 0)
    except (TlensICLError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
