"""Subcommands of the heads family: ``heads`` (FV vs induction heads: scores, ablation, overlap) and
``heads-dynamics`` (the final top heads over an embedded model's training checkpoints)."""

from __future__ import annotations

import argparse
import json
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
    fraction,
    load_model_for,
    tasks_of,
)


def add_cli(subparsers: Any) -> None:
    p = add_parser(subparsers, "heads", help="induction vs function-vector heads: scores, ablation with exclusion, overlap",
                   description="Scores every head as an induction / previous-token head (repeated random tokens) and "
                               "as a function-vector head (AIE), ablates the top-k of each ranking (excluding the other "
                               "ranking's top heads) against random heads, and measures the overlap and depth of the "
                               "head sets. With --out: results, figures, CSVs, report.md and index.html.")
    add_tasks(p, nargs="*", help="tasks (default: the embedded model's own tasks)")
    add_common(p, shots=5, n=32, n_help="few-shot prompts per task for accuracy")
    p.add_argument("--n-mean", type=at_least(1), default=32, help="clean prompts per task for the AIE mean")
    p.add_argument("--n-corrupted", type=at_least(1), default=16, help="corrupted prompts per task for the AIE")
    p.add_argument("--corruption", default="zero_shot", choices=CORRUPTION_NAMES, help="corruption of the AIE run")
    p.add_argument("--ks", nargs="+", type=_k, default=[0, 1, 2, 4, 8], help="head counts or fractions (0.05)")
    p.add_argument("--exclude", type=fraction, default=0.0, help="drop the other ranking's top fraction first (0.02)")
    p.add_argument("--seeds", type=at_least(1), default=3, help="random-heads control seeds")
    p.add_argument("--positions", default="all", choices=["all", "query"], help="where heads are ablated")
    p.add_argument("--no-loss", action="store_true", help="skip the token-loss ICL score")
    p.add_argument("--loss-n", type=at_least(1), default=16, help="sequences for the token-loss score")
    p.add_argument("--loss-length", type=at_least(2), default=128, help="tokens per token-loss sequence")
    p.add_argument("--rsa", action="store_true", help="also rank heads by concept RSA (representational heads)")
    p.add_argument("--overlap-ks", nargs="+", type=at_least(1), default=[1, 3, 5, 10], help="top-k sizes for the overlap")
    add_out(p, "results, figures, tables, report.md and index.html")
    p.set_defaults(func=_cmd_heads)

    p = add_parser(subparsers, "heads-dynamics", help="top FV / induction heads over an embedded model's training (icl-forming ships its checkpoints)",
                   description="The final model's top function-vector and induction heads, scored at every training "
                               "checkpoint of an embedded model.")
    add_tasks(p, nargs="*", help="tasks (default: the embedded model's own tasks)")
    add_common(p, shots=4, n=32, n_help="prompts per task and checkpoint")
    p.add_argument("--k", type=at_least(1), default=3, help="top heads followed from each ranking")
    p.add_argument("--steps", type=at_least(0), nargs="+", default=None,
                   help="checkpoints to measure (default: all; the final model is always included)")
    add_out(p)
    p.set_defaults(func=_cmd_dynamics, model="icl-forming")


def _k(text: str) -> int | float:
    """A head count (int >= 0) or a fraction of all heads (a number in (0, 1))."""
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a head count or a fraction, got {text!r}") from None
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"a fraction of the heads must be in (0, 1), got {value}") from None
        return value
    if value < 0:
        raise argparse.ArgumentTypeError(f"a head count must be >= 0, got {value}")
    return value


def _cmd_heads(args: argparse.Namespace) -> int:
    from tlens_icl.models import model_tasks
    from tlens_icl.results.report import export_section
    from tlens_icl.workflows.heads import heads_study

    out = check_out(args)
    tasks = tasks_of(args)
    model = load_model_for(args, tasks)
    tasks = tasks or model_tasks(model)
    study = heads_study(model, tasks, n=args.n, n_shots=args.shots, n_mean=args.n_mean, n_corrupted=args.n_corrupted,
                        corruption=args.corruption, seed=args.seed, template=args.template, ks=args.ks,
                        exclude=args.exclude, n_random=args.seeds, positions=args.positions, loss=not args.no_loss,
                        loss_n=args.loss_n, loss_length=args.loss_length, rsa=args.rsa, overlap_ks=args.overlap_ks,
                        progress=args.progress, log=lambda line: print(line, flush=True))
    scores, aie, abl, ov, timings = study.scores, study.aie, study.ablation, study.overlap, study.timings
    if out is None:
        return 0
    sections = [export_section(res, out, name, name) for name, res in
                (("ablation", abl), ("overlap", ov), ("head_scores", scores), ("aie", aie))]
    abl.to_dataframe().to_csv(out / "ablation.csv", index=False)
    ov.to_dataframe().to_csv(out / "overlap.csv", index=False)
    ov.depth_table().to_csv(out / "depth.csv", index=False)
    scores.top_table(10, "induction").to_csv(out / "top_induction.csv", index=False)
    aie.top_table(10).to_csv(out / "top_fv.csv", index=False)
    report = [f"# Heads report: {args.model}", "", f"tasks: {', '.join(tasks)}; {args.shots}-shot; seed {args.seed}", "",
              *(f"* {r.summary()}" for r in (scores, aie, abl, ov)), "", "## Ablation", "",
              _block(abl.to_dataframe().drop(columns=["heads"])), "",
              "## Overlap", "", _block(ov.to_dataframe()), "", _block(ov.depth_table()), "", "## Timings (s)", "",
              json.dumps(timings), ""]
    (out / "report.md").write_text("\n".join(report))
    sections[0].files += ["ablation.csv", "overlap.csv", "depth.csv", "top_induction.csv", "top_fv.csv", "report.md"]
    finish(args, out, sections, title=f"Induction vs function-vector heads: {args.model}")
    return 0


def _block(df: Any) -> str:
    return "```\n" + df.to_string(index=False, float_format=lambda x: f"{x:.3g}") + "\n```"


def _cmd_dynamics(args: argparse.Namespace) -> int:
    from tlens_icl.workflows.dynamics import head_dynamics
    from tlens_icl.results.report import export_section

    out = check_out(args)
    res = head_dynamics(args.model, tasks_of(args) or None, steps=args.steps, k=args.k, n_shots=args.shots, n=args.n,
                        seed=args.seed, progress=args.progress)
    print(res.summary())
    print(res.to_dataframe().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if out is not None:
        finish(args, out, [export_section(res, out, "", "dynamics")], title=f"Heads over training: {args.model}")
    return 0
