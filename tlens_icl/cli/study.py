"""Subcommands of the cross-model study: ``study`` (run it on one model, resumable) and ``study-table``
(several stored studies beside the papers)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tlens_icl.cli.common import add_parser, add_run_options


def add_cli(subparsers: Any) -> None:
    p = add_parser(subparsers, "study", help="the papers' measurements on one model at their sizes (resumable)",
                   description="Runs the whole cross-model study on MODEL into --out: ICL curves, Todd et al.'s scan, "
                               "function and task vectors (layer chosen on validation items, scored on test items), "
                               "concept decodability and RSA, head scores, ablation with exclusion, attention ratio. "
                               "Each step is saved when it finishes; the same command with --resume continues an "
                               "interrupted run. Writes DIR/report/index.html at the end.")
    p.add_argument("model", metavar="MODEL", help="a model name (tlens-icl models), .gguf file or folder")
    p.add_argument("--out", metavar="DIR", required=True, help="the study folder (results, study.json, report/)")
    p.add_argument("--sizes", choices=["paper", "reduced", "smoke"], default="paper",
                   help="paper: the papers' sizes; reduced: smaller vector/ablation/attention sizes (the 1.5B model "
                        "on a CPU); smoke: seconds, to try the command")
    p.add_argument("--seed", type=int, default=0, help="seed for prompts, splits and resampling")
    p.add_argument("--resume", action="store_true", help="continue the study in a non-empty --out (same model, sizes, seed)")
    add_run_options(p)
    p.set_defaults(func=_cmd_study)

    p = add_parser(subparsers, "study-table", help="several stored studies beside the papers (markdown table, figures)",
                   description="Reads study folders (tlens-icl study --out DIR), recomputes nothing, and prints the "
                               "cross-model table in markdown; with --out also writes the cross-model figures as PNG.")
    p.add_argument("folders", metavar="DIR", nargs="+", help="study folders, smallest model first")
    p.add_argument("--out", metavar="DIR", default=None, help="write table.md, table.csv and the figures here")
    p.add_argument("--partial", action="store_true",
                   help="include unfinished studies: their finished steps, 'not run' for the others")
    p.set_defaults(func=_cmd_table)


def _cmd_study(args: argparse.Namespace) -> int:
    from tlens_icl.errors import TlensICLError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TlensICLError(f"--out {out} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise TlensICLError(f"--out {out} is not empty; pass --resume to continue the study there, or choose a new folder.")
    from tlens_icl.models import load_model
    from tlens_icl.workflows import run_study
    from tlens_icl.workflows.summary import write_study_report

    t0 = time.time()
    model = load_model(args.model)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    run_study(model, out=out, sizes=args.sizes, seed=args.seed, progress=progress, log=log)
    path = write_study_report(out)
    print(f"study complete: {out} (open {path})")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from tlens_icl.workflows import (
        cross_model_figures,
        cross_model_table,
        provenance_markdown,
        study_summary,
        table_markdown,
    )

    summaries = [study_summary(f, partial=args.partial) for f in args.folders]
    table = cross_model_table(summaries)
    text = table_markdown(table)
    print(text)
    if args.out:
        import matplotlib.pyplot as plt

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text + "\n", encoding="utf-8")
        (out / "provenance.md").write_text(provenance_markdown(summaries) + "\n", encoding="utf-8")
        table.to_csv(out / "table.csv", index=False)
        for name, fig in cross_model_figures(summaries).items():
            fig.savefig(out / f"{name}.png", dpi=130)
            plt.close(fig)
        print(f"written to {out}", file=sys.stderr)
    return 0
