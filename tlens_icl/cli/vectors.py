"""Subcommands of the vectors family: ``vectors`` (compare FV, TV, ICV, soft injection)."""

from __future__ import annotations

import argparse
from typing import Any

from tlens_icl.analyses.vectors.compare import METHODS, compare_methods
from tlens_icl.cli.common import add_common
from tlens_icl.errors import TlensICLError


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("vectors", help="extract FV / task vector / ICV / soft injection and compare them "
                                              "on held-out items")
    p.add_argument("--task", nargs="+", required=True)
    add_common(p, shots_default=8)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--n", type=int, default=64, help="test items per task")
    p.add_argument("--n-fit", type=int, default=32, help="prompts used to build each vector")
    p.add_argument("--fv-k", type=int, default=10, help="heads in the function vector")
    p.add_argument("--fv-corruption", nargs="+", default=["shuffled_labels"],
                   help="corruption for the FV's mediation run: one name, or TASK=NAME per task")
    p.add_argument("--soft-steps", type=int, default=100)
    p.add_argument("--out", default=None, help="folder for the result, tables (CSV) and plots")
    p.set_defaults(func=_cmd_vectors)


def _cmd_vectors(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlens_icl.models import load_model

    corruption: str | dict[str, str] = args.fv_corruption[0]
    if any("=" in c for c in args.fv_corruption):
        corruption = dict(c.split("=", 1) for c in args.fv_corruption)
        missing = [t for t in args.task if t not in corruption]
        if missing:
            raise TlensICLError(f"--fv-corruption gives no corruption for task(s) {missing}.")
    model = load_model(args.model)
    res = compare_methods(model, args.task, methods=args.methods, n_test=args.n, n_fit=args.n_fit,
                          n_shots=args.shots, seed=args.seed, fv_k=args.fv_k, fv_corruption=corruption,
                          soft_steps=args.soft_steps, template=args.template)
    fmt = lambda x: f"{x:.3f}"  # noqa: E731
    print(res.table().to_string(float_format=fmt))
    print(res.table(filtered=True).to_string(float_format=fmt))
    if args.out:
        out = Path(args.out)
        res.save(out)
        res.to_dataframe().to_csv(out / "comparison.csv", index=False)
        for filtered in (False, True):
            tag = "icl_correct" if filtered else "all"
            res.table(filtered=filtered).to_csv(out / f"table_{tag}.csv")
            res.plot(filtered=filtered).savefig(out / f"comparison_{tag}.png", dpi=120, bbox_inches="tight")
        res.plot_layers().savefig(out / "layer_selection.png", dpi=120, bbox_inches="tight")
        print(f"saved to {out}")
    return 0
