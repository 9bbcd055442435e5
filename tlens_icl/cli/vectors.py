"""Subcommands of the vectors family: ``vectors`` (compare FV, TV, ICV, soft injection)."""

from __future__ import annotations

import argparse
from typing import Any

from tlens_icl.cli.common import (
    CORRUPTION_NAMES,
    add_common,
    add_out,
    add_parser,
    add_tasks,
    at_least,
    check_out,
    finish,
    load_model_for,
    tasks_of,
)

#: ``tlens_icl.workflows.compare.METHODS``, spelled here so that ``--help`` imports no torch
#: (tests/test_cli.py checks that the two agree).
METHOD_NAMES = ("function_vector", "task_vector", "icv", "soft_injection")


def add_cli(subparsers: Any) -> None:
    p = add_parser(subparsers, "vectors", help="extract FV / task vector / ICV / soft injection and compare them on "
                                               "held-out items",
                   description="Splits each task into train/test, builds every method from train items only, picks "
                               "each method's layer/strength on train queries and scores all of them, with zero-shot "
                               "and ICL baselines, on the same held-out zero-shot prompts (bootstrap 95% CIs).")
    add_tasks(p)
    add_common(p, shots=8, n=64, n_help="held-out test items per task")
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=list(METHOD_NAMES),
                   help="methods to compare")
    p.add_argument("--n-fit", type=at_least(1), default=32, help="prompts used to build each vector")
    p.add_argument("--fv-k", type=at_least(1), default=10, help="heads summed into the function vector")
    p.add_argument("--fv-corruption", nargs="+", default=["shuffled_labels"],
                   help="corruption for the FV's mediation run: one name, or TASK=NAME per task")
    p.add_argument("--soft-steps", type=at_least(0), default=100, help="training steps of soft injection")
    add_out(p)
    p.set_defaults(func=_cmd_vectors)


def _cmd_vectors(args: argparse.Namespace) -> int:
    from tlens_icl.workflows.compare import compare_methods
    from tlens_icl.errors import TlensICLError
    from tlens_icl.results.report import export_section

    out = check_out(args)
    tasks = tasks_of(args)
    corruption: str | dict[str, str] = args.fv_corruption[0]
    if any("=" in c for c in args.fv_corruption):
        corruption = dict(c.split("=", 1) for c in args.fv_corruption)
        missing = [t for t in tasks if t not in corruption]
        if missing:
            raise TlensICLError(f"--fv-corruption gives no corruption for task(s) {missing}.")
        extra = [t for t in corruption if t not in tasks]
        if extra:
            raise TlensICLError(f"--fv-corruption names task(s) {extra} that are not among the tasks {tasks}.")
    unknown = sorted({c for c in ([corruption] if isinstance(corruption, str) else corruption.values())
                      if c not in CORRUPTION_NAMES})
    if unknown:
        raise TlensICLError(f"--fv-corruption: unknown corruption(s) {unknown}; choose from {list(CORRUPTION_NAMES)}.")
    model = load_model_for(args, tasks)
    res = compare_methods(model, tasks, methods=args.methods, n=args.n, n_fit=args.n_fit,
                          n_shots=args.shots, seed=args.seed, fv_k=args.fv_k, fv_corruption=corruption,
                          soft_steps=args.soft_steps, template=args.template, progress=args.progress)
    fmt = lambda x: f"{x:.3f}"  # noqa: E731
    print(res.summary())
    print(res.table().to_string(float_format=fmt))
    print(res.table(filtered=True).to_string(float_format=fmt))
    if out is not None:
        section = export_section(res, out, "", "comparison")
        for filtered in (False, True):
            tag = "icl_correct" if filtered else "all"
            res.table(filtered=filtered).to_csv(out / f"table_{tag}.csv")
            section.files.append(f"table_{tag}.csv")
        finish(args, out, [section], title=f"Vector methods compared: {res.model_name}")
    return 0
