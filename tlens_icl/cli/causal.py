"""Subcommands of the causal family: ``mediate``."""

from __future__ import annotations

import argparse
from typing import Any

from tlens_icl.cli.common import (
    AIE_METRIC_NAMES,
    CORRUPTION_NAMES,
    add_common,
    add_out,
    add_parser,
    add_tasks,
    at_least,
    check_out,
    checkpoint_of,
    finish,
    load_model_for,
    task_name,
    tasks_of,
)


def add_cli(subparsers: Any) -> None:
    p = add_parser(subparsers, "mediate", help="causal mediation (Todd et al. AIE) of every attention head",
                   description="Causal mediation (Todd et al. 2024): each head's mean query-position output over clean "
                               "ICL prompts is written into corrupted prompts; the gain in the metric is its indirect "
                               "effect, averaged over prompts and tasks (AIE). With --out: the result, the heatmap, "
                               "top_heads.csv, the attention of the top heads (attention.html) and index.html.")
    add_tasks(p, help="one or more task names (the AIE is averaged over them)")
    add_common(p, shots=10)
    p.add_argument("--n-mean", type=at_least(1), default=100, help="clean prompts averaged for each head's mean activation")
    p.add_argument("--n-corrupted", type=at_least(1), default=25, help="corrupted prompts patched per task")
    p.add_argument("--corruption", default="shuffled_labels", choices=CORRUPTION_NAMES,
                   help="shuffled_labels | random_labels | other_task_labels | zero_shot | corrupted_query")
    p.add_argument("--other-task", default=None, type=task_name, help="label source for --corruption other_task_labels")
    p.add_argument("--metric", default="prob", choices=AIE_METRIC_NAMES,
                   help="prob | logprob | rank | top1 of the first answer token")
    p.add_argument("--method", default="auto", choices=["auto", "fast", "naive", "attribution"],
                   help="auto/fast/naive are exact; attribution is the gradient estimate")
    p.add_argument("--heads", nargs="+", type=_parse_head, default=None, metavar="L.H",
                   help="patch only these heads, e.g. --heads 3.1 5.0 (default: every head)")
    p.add_argument("--filter-correct", action="store_true",
                   help="Todd et al.'s filter: keep only prompts whose clean version the model answers correctly")
    p.add_argument("--top-k", type=at_least(1), default=10, help="heads outlined in the heatmap and listed in top_heads.csv")
    add_out(p, resumable=True)
    p.set_defaults(func=_cmd_mediate)


def _cmd_mediate(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.causal.mediation import head_attention_html, indirect_effect
    from tlens_icl.errors import TlensICLError
    from tlens_icl.prompts.pairs import make_prompts
    from tlens_icl.results.report import export_section

    out = check_out(args)
    tasks = tasks_of(args)
    if (args.corruption == "other_task_labels") != (args.other_task is not None):
        raise TlensICLError("--corruption other_task_labels needs --other-task TASK (the label source), and "
                            "--other-task is used only with it.")
    model = load_model_for(args, tasks)
    res = indirect_effect(model, tasks, n_mean=args.n_mean, n=args.n_corrupted, n_shots=args.shots,
                          corruption=args.corruption, seed=args.seed, metric=args.metric, method=args.method,
                          heads=args.heads, filter_correct=args.filter_correct, other_task=args.other_task,
                          template=args.template, progress=args.progress, checkpoint=checkpoint_of(args, out))
    table = res.top_table(args.top_k)
    print(res.summary())
    if args.filter_correct:
        print(f"kept (clean prompt answered correctly): {res.info['n_kept']} of {args.n_corrupted} per task")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if out is not None:
        section = export_section(res, out, "", "aie", k=args.top_k)
        table.to_csv(out / "top_heads.csv", index=False)
        prompt = make_prompts(model, res.tasks[0], n=1, n_shots=args.shots, seed=args.seed, template=args.template)
        section.views.append(head_attention_html(model, prompt, res.top_heads(min(args.top_k, 4)),
                                                 path=out / "attention.html"))
        section.files += ["top_heads.csv", "attention.html"]
        finish(args, out, [section], title=f"Causal mediation: {res.model_name}")
    return 0


def _parse_head(text: str) -> Any:
    from tlens_icl._typing import Head

    layer, sep, head = text.partition(".")
    if not (sep and layer.isdigit() and head.isdigit()):
        raise argparse.ArgumentTypeError(f"expected LAYER.HEAD such as 3.1, got {text!r}")
    return Head(int(layer), int(head))
