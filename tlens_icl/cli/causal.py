"""Subcommands of the causal family: ``mediate``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tlens_icl._typing import Head
from tlens_icl.analyses.causal.mediation import head_attention_html, indirect_effect
from tlens_icl.cli.common import add_common
from tlens_icl.prompts.pairs import make_prompts


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("mediate", help="causal mediation (Todd et al. AIE) of every attention head")
    p.add_argument("--task", nargs="+", required=True, help="one or more task names (AIE averaged over them)")
    add_common(p)
    p.add_argument("--n-mean", type=int, default=100)
    p.add_argument("--n-corrupted", type=int, default=25)
    p.add_argument("--corruption", default="shuffled_labels")
    p.add_argument("--other-task", default=None, help="label source for --corruption other_task_labels")
    p.add_argument("--metric", default="prob")
    p.add_argument("--method", default="auto", choices=["auto", "fast", "naive", "attribution"])
    p.add_argument("--heads", nargs="+", type=_parse_head, default=None, metavar="L.H",
                   help="patch only these heads, e.g. --heads 3.1 5.0 (default: every head)")
    p.add_argument("--filter-correct", action="store_true",
                   help="Todd et al.'s filter: keep only prompts whose clean version the model answers correctly")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--out", required=True, help="folder for aie.png, top_heads.csv, attention.html and the result")
    p.set_defaults(func=_cmd_mediate)


def _cmd_mediate(args: argparse.Namespace) -> int:
    from tlens_icl.models import load_model

    model = load_model(args.model)
    res = indirect_effect(model, args.task, n_mean=args.n_mean, n_corrupted=args.n_corrupted, n_shots=args.shots,
                          corruption=args.corruption, seed=args.seed, metric=args.metric, method=args.method,
                          heads=args.heads, filter_correct=args.filter_correct, other_task=args.other_task,
                          template=args.template)
    out = Path(args.out)
    res.save(out / "result")
    res.plot(k=args.top_k).savefig(out / "aie.png", dpi=120, bbox_inches="tight")
    table = res.top_table(args.top_k)
    table.to_csv(out / "top_heads.csv", index=False)
    prompt = make_prompts(res.tasks[0], model, n=1, n_shots=args.shots, seed=args.seed, template=args.template)
    head_attention_html(model, prompt, res.top_heads(min(args.top_k, 4)), path=out / "attention.html")
    print(res.summary())
    if args.filter_correct:
        print(f"kept (clean prompt answered correctly): {res.info['n_kept']} of {args.n_corrupted} per task")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"saved to {out}")
    return 0


def _parse_head(text: str) -> Head:
    layer, sep, head = text.partition(".")
    if not (sep and layer.isdigit() and head.isdigit()):
        raise argparse.ArgumentTypeError(f"expected LAYER.HEAD such as 3.1, got {text!r}")
    return Head(int(layer), int(head))
