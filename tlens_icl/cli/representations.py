"""Subcommands of the representations family: ``decodability``, ``rsa``, ``probe``, ``attention-ratio``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from tlens_icl.cli.common import (
    SITE_NAMES,
    add_common,
    add_out,
    add_parser,
    add_tasks,
    at_least,
    check_out,
    finish,
    load_model_for,
    region,
    tasks_of,
)

SITES_HELP = "resid_post | resid_pre | attn_out | mlp_out (per layer) or z | head_out (per head)"


def add_activation_args(p: Any, *, shots: Sequence[int], n: int) -> None:
    """``TASK ... --model --seed --template --shots --n --site --out`` for a representational subcommand."""
    add_tasks(p, help="task names; every prompt's label is its task")
    add_common(p, shots=shots, n=n, n_help="prompts per task and shot count")
    p.add_argument("--site", default="resid_post", choices=SITE_NAMES,
                   help=f"activation read at the query position: {SITES_HELP}")
    add_out(p)


def activations_from_args(args: Any) -> tuple[Any, Any]:
    """Load ``--model`` and collect ``--site`` at the query for the tasks x ``--shots`` (CLI helper)."""
    from tlens_icl.analyses.representations.activations import task_activations

    tasks = tasks_of(args)
    model = load_model_for(args, tasks)
    acts = task_activations(model, tasks, shots=args.shots, n=args.n, seed=args.seed, template=args.template,
                            sites=[args.site], progress=args.progress)
    return model, acts


def _export(args: argparse.Namespace, out: Any, res: Any, name: str, title: str, **plot_kwargs: Any) -> None:
    from tlens_icl.results.report import export_section

    if out is not None:
        finish(args, out, [export_section(res, out, "", name, **plot_kwargs)], title=f"{title}: {res.model_name}")


def _add_decodability(subparsers: Any) -> None:
    p = add_parser(subparsers, "decodability", help="concept decodability (leave-one-out kNN) per layer and shot count",
                   description="Concept decodability: the fraction of prompts whose task a leave-one-out k-NN vote "
                               "over the other prompts' activations recovers, per layer (or head) and shot count; "
                               "chance and a shuffled-label control are reported.")
    add_activation_args(p, shots=(0, 1, 2, 4, 8), n=50)
    p.add_argument("--k", type=at_least(1), default=10, help="neighbours in the vote")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"], help="distance between activations")
    p.add_argument("--accuracy", action="store_true", help="also measure ICL accuracy and correlate it with CD")
    p.set_defaults(func=_cmd_decodability)


def _cmd_decodability(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.accuracy import icl_accuracy
    from tlens_icl.analyses.representations.decodability import concept_decodability

    out = check_out(args)
    model, acts = activations_from_args(args)
    res = concept_decodability(acts, site=args.site, k=args.k, metric=args.metric, seed=args.seed,
                               progress=args.progress)
    print(res.summary())
    print(res.table().to_string(float_format=lambda x: f"{x:.3f}"))
    if args.accuracy:
        acc = icl_accuracy(model, tasks_of(args), shots=args.shots, n=args.n, seed=args.seed, template=args.template)
        corr = res.correlate(acc)
        print(corr.to_string(float_format=lambda x: f"{x:.3g}"))
        if out is not None:
            corr.to_csv(out / "correlation_with_accuracy.csv", index=False)
    _export(args, out, res, "decodability", "Concept decodability")
    return 0


def _add_rsa(subparsers: Any) -> None:
    p = add_parser(subparsers, "rsa", help="RSA of layer/head representations with the same-task hypothesis",
                   description="Representational similarity analysis: Spearman correlation between each layer's (or "
                               "head's) dissimilarity matrix over prompts and the hypothesis 'same task = similar', "
                               "with a Mantel permutation test.")
    add_activation_args(p, shots=(0, 8), n=30)
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean", "correlation"],
                   help="dissimilarity between activations")
    p.add_argument("--permutations", type=at_least(0), default=1000, help="Mantel-test permutations")
    p.set_defaults(func=_cmd_rsa)


def _cmd_rsa(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.representations.rsa import rsa

    out = check_out(args)
    _, acts = activations_from_args(args)
    res = rsa(acts, site=args.site, metric=args.metric, n_permutations=args.permutations, seed=args.seed,
              progress=args.progress)
    print(res.summary())
    print(res.table().to_string(float_format=lambda x: f"{x:.3f}"))
    _export(args, out, res, "rsa", "RSA")
    return 0


def _add_probe(subparsers: Any) -> None:
    p = add_parser(subparsers, "probe", help="linear probes (with a control task) for a latent task parameter",
                   description="Cross-validated linear probes per layer (or head) and shot count, with the "
                               "Hewitt-Liang control task; selectivity = score - control.")
    add_activation_args(p, shots=(0, 8), n=50)
    p.add_argument("--target", default="task", type=_target, help="what to decode: task | meta.<key> (e.g. meta.slope)")
    p.add_argument("--kind", default="auto", choices=["auto", "classification", "regression"],
                   help="auto: regression for numeric targets")
    p.set_defaults(func=_cmd_probe)


def _target(text: str) -> str:
    if text == "task" or (text.startswith("meta.") and len(text) > 5):
        return text
    raise argparse.ArgumentTypeError(f"expected task or meta.<key>, got {text!r}")


def _cmd_probe(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.representations.probing import probe

    out = check_out(args)
    _, acts = activations_from_args(args)
    res = probe(acts, args.target, site=args.site, kind=args.kind, seed=args.seed, progress=args.progress)
    print(res.summary())
    print(res.to_dataframe().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    _export(args, out, res, "probe", "Linear probe")
    return 0


def _add_attention_ratio(subparsers: Any) -> None:
    p = add_parser(subparsers, "attention-ratio", help="share of the query's attention on one region vs another",
                   description="For every head: the attention mass from the query position to the RELEVANT tokens "
                               "and to the IRRELEVANT tokens, reported as the share rel / (rel + irr) (0.5 = no "
                               "preference; 'n/a' where neither region exists, e.g. demonstration roles at 0 shots). "
                               "Regions are token roles (bos, separator, demo_input, demo_output, query_input) or "
                               "meta:<key> (tokens of the query item's meta field, e.g. meta:relevant in "
                               "reading_comprehension). The default asks whether the query reads the demonstrations' "
                               "outputs or their inputs. One condition per --shots value.")
    add_tasks(p, nargs=None, help="a task name")
    add_common(p, shots=(1, 4, 8), n=32, n_help="prompts per condition")
    p.add_argument("--relevant", default="demo_output", type=region, help="region of interest: a token role or meta:<key>")
    p.add_argument("--irrelevant", default="demo_input", type=region, help="the region it is compared with")
    p.add_argument("--per-token", action="store_true", help="normalise each region's mass by its token count")
    add_out(p)
    p.set_defaults(func=_cmd_attention_ratio)


def _cmd_attention_ratio(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.representations.attention_ratio import attention_ratio
    from tlens_icl.prompts.pairs import make_prompts

    out = check_out(args)
    (task,) = tasks_of(args)
    model = load_model_for(args, [task])
    prompts = {f"{k}-shot": make_prompts(model, task, n=args.n, n_shots=k, seed=args.seed, template=args.template)
               for k in args.shots}
    res = attention_ratio(model, prompts, relevant=args.relevant, irrelevant=args.irrelevant, progress=args.progress)
    print(res.summary())
    fmt = lambda x: "n/a" if x != x else f"{x:.3f}"  # noqa: E731 - NaN: neither region attended / present
    for c in res.condition_names:
        per_layer = res.ratio(c, per_token=args.per_token).nanmean(1).tolist()
        print(f"{c}: share on {args.relevant} per layer (mean over heads):", " ".join(fmt(x) for x in per_layer))
    _export(args, out, res, "attention_ratio", "Attention ratio", per_token=args.per_token)
    return 0


def add_cli(subparsers: Any) -> None:
    for add in (_add_decodability, _add_rsa, _add_probe, _add_attention_ratio):
        add(subparsers)
