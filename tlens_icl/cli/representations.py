"""Subcommands of the representations family: ``decodability``, ``rsa``, ``probe``, ``attention-ratio``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from tlens_icl._typing import ModelLike
from tlens_icl.analyses.representations.activations import (
    ActivationSet,
    task_activations,
)
from tlens_icl.analyses.representations.attention_ratio import attention_ratio
from tlens_icl.analyses.representations.decodability import concept_decodability
from tlens_icl.analyses.representations.probing import probe
from tlens_icl.analyses.representations.rsa import rsa
from tlens_icl.cli.common import add_common


def add_activation_args(p: Any, *, shots: Sequence[int], n: int, site_help: str = "resid_post") -> None:
    """``--tasks --model --seed --template --shots --n --site --out`` for a representational subcommand."""
    
    p.add_argument("--tasks", nargs="+", required=True)
    add_common(p, shots_default=None)
    p.add_argument("--shots", type=int, nargs="+", default=list(shots))
    p.add_argument("--n", type=int, default=n, help="prompts per task and shot count")
    p.add_argument("--site", default="resid_post", help=site_help)
    p.add_argument("--out", default=None, help="folder for the saved result and plot")


def activations_from_args(args: Any) -> tuple[ModelLike, "ActivationSet"]:
    """Load ``args.model`` and collect ``args.site`` for ``args.tasks`` x ``args.shots`` (CLI helper)."""
    from tlens_icl.models import load_model

    model = load_model(args.model)
    acts = task_activations(model, args.tasks, n_shots=args.shots, n=args.n, seed=args.seed, template=args.template,
                            sites=[args.site])
    return model, acts


def _add_decodability(subparsers: Any) -> None:
    p = subparsers.add_parser("decodability", help="concept decodability (leave-one-out kNN) per layer and shot count")
    add_activation_args(p, shots=(0, 1, 2, 4, 8), n=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    p.add_argument("--accuracy", action="store_true", help="also measure ICL accuracy and correlate it with CD")
    p.set_defaults(func=_cmd_decodability)


def _cmd_decodability(args: argparse.Namespace) -> int:
    from tlens_icl.analyses.accuracy import icl_accuracy

    model, acts = activations_from_args(args)
    res = concept_decodability(acts, site=args.site, k=args.k, metric=args.metric, seed=args.seed)
    print(res.summary())
    print(res.table().to_string(float_format=lambda x: f"{x:.3f}"))
    if args.accuracy:
        acc = icl_accuracy(model, args.tasks, n_shots=args.shots, n=args.n, seed=args.seed, template=args.template)
        print(res.correlate(acc).to_string(float_format=lambda x: f"{x:.3g}"))
    if args.out:
        print(f"saved to {res.export(args.out, 'decodability')}")
    return 0


def _add_rsa(subparsers: Any) -> None:
    p = subparsers.add_parser("rsa", help="RSA of layer/head representations with the same-task hypothesis")
    add_activation_args(p, shots=(0, 8), n=30, site_help="resid_post | resid_pre | attn_out | mlp_out | z | head_out")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean", "correlation"])
    p.add_argument("--permutations", type=int, default=1000)
    p.set_defaults(func=_cmd_rsa)


def _cmd_rsa(args: argparse.Namespace) -> int:

    _, acts = activations_from_args(args)
    res = rsa(acts, site=args.site, metric=args.metric, n_permutations=args.permutations, seed=args.seed)
    print(res.summary())
    print(res.table().to_string(float_format=lambda x: f"{x:.3f}"))
    if args.out:
        print(f"saved to {res.export(args.out, 'rsa')}")
    return 0


def _add_probe(subparsers: Any) -> None:
    p = subparsers.add_parser("probe", help="linear probes (with a control task) for a latent task parameter")
    add_activation_args(p, shots=(0, 8), n=50)
    p.add_argument("--target", default="task", help="task | meta.<key> (e.g. meta.slope)")
    p.add_argument("--kind", default="auto", choices=["auto", "classification", "regression"])
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:

    _, acts = activations_from_args(args)
    res = probe(acts, args.target, site=args.site, kind=args.kind, seed=args.seed)
    print(res.summary())
    print(res.to_dataframe().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        print(f"saved to {res.export(args.out, 'probe')}")
    return 0


def _add_attention_ratio(subparsers: Any) -> None:
    
    p = subparsers.add_parser("attention-ratio", help="attention from the query to relevant vs irrelevant tokens")
    p.add_argument("task")
    add_common(p, shots_default=None)
    p.add_argument("--shots", type=int, nargs="+", default=[0, 3], help="one condition per shot count")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--relevant", default="meta:relevant", help="a token role or meta:<key>")
    p.add_argument("--irrelevant", default="meta:distractors", help="a token role or meta:<key>")
    p.add_argument("--per-token", action="store_true", help="normalise each region's mass by its token count")
    p.add_argument("--out", default=None, help="folder for the saved result and plot")
    p.set_defaults(func=_cmd_attention_ratio)


def _cmd_attention_ratio(args: argparse.Namespace) -> int:
    from tlens_icl.models import load_model
    from tlens_icl.prompts.pairs import make_prompts

    model = load_model(args.model)
    prompts = {f"{k}-shot": make_prompts(args.task, model, n=args.n, n_shots=k, seed=args.seed, template=args.template)
               for k in args.shots}
    res = attention_ratio(model, prompts, relevant=args.relevant, irrelevant=args.irrelevant)
    print(res.summary())
    for c in res.condition_names:
        print(f"{c}: share per layer (mean over heads):",
              " ".join(f"{float(x):.3f}" for x in res.ratio(c, per_token=args.per_token).nanmean(1)))
    if args.out:
        print(f"saved to {res.export(args.out, 'attention_ratio', per_token=args.per_token)}")
    return 0


def add_cli(subparsers: Any) -> None:
    for add in (_add_decodability, _add_rsa, _add_probe, _add_attention_ratio):
        add(subparsers)
