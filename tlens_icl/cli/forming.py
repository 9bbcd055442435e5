"""Subcommand ``forming``: ICL as it forms in ``icl-forming`` over training seeds (train where missing, follow the
final heads through the checkpoints, store per seed, one table and figure across seeds)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tlens_icl.cli.common import add_parser, add_run_options, at_least


def add_cli(subparsers: Any) -> None:
    p = add_parser(subparsers, "forming", help="ICL as it forms in icl-forming, over training seeds (resumable)",
                   description="For each seed: trains icl-forming (seed 0 is the shipped model; others go to "
                               "--models DIR/seed<s>, about 15 minutes each on one thread) unless already trained, "
                               "follows the final model's top induction, previous-token and FV heads through every "
                               "checkpoint (head_dynamics), and stores the result with the training log in "
                               "--out/seed<s>/. Seeds already stored are skipped. Then writes --out/summary.json, "
                               "--out/seeds.png and --out/seed<s>.png.")
    p.add_argument("--seeds", type=at_least(0), nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--out", metavar="DIR", required=True, help="the study folder")
    p.add_argument("--models", metavar="DIR", default=None,
                   help="where the non-shipped seeds' models are (or are trained); default --out/models")
    add_run_options(p)
    p.set_defaults(func=_cmd_forming)


def _cmd_forming(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from tlens_icl.workflows.forming import forming_study, load_forming, seeds_figure

    out = Path(args.out)
    t0 = time.time()
    progress = args.progress if args.progress is not None else sys.stderr.isatty()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    summary = forming_study(args.seeds, out, models=Path(args.models) if args.models else out / "models",
                            progress=progress, log=log)
    results = load_forming(out, args.seeds)
    for seed, res in results.items():
        fig = res.plot()
        fig.savefig(out / f"seed{seed}.png", dpi=110)
        plt.close(fig)
    fig = seeds_figure(results)
    fig.savefig(out / "seeds.png", dpi=110)
    plt.close(fig)
    for seed, row in summary["seeds"].items():
        band = row["induction_phase"]
        shots = [k for k in row if k.startswith("accuracy_") and k.endswith("shot")][-1]
        print(f"seed {seed}: induction heads {row['top_induction']} at lags {row['induction_lag']} (final score "
              f"{row['final_induction_score']}), phase change {'steps %.0f-%.0f' % tuple(band) if band else 'none'}; "
              f"FV heads {row['top_fv']}; final {shots.split('_')[1]} accuracy {row[shots]}; ablating the FV heads "
              f"costs more than ablating the induction heads from step {row['fv_takeover_step']} on")
    print(f"written to {out}")
    return 0
