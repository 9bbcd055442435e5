"""What every subcommand shares: option names, help with defaults, ``--out`` semantics, threads, reports.

Conventions (one naming everywhere): tasks are positional (``tlens-icl mediate bitwise_xor bitwise_and``);
``--model``, ``--seed``, ``--template``, ``--shots``, ``--n`` mean the same in every subcommand; ``--out DIR``
writes the results, figures, CSVs and an ``index.html`` report into ``DIR`` and refuses a folder that is not
empty unless ``--overwrite`` is given; without ``--out`` nothing is written. Heavy modules (torch,
TransformerLens, the analyses) are imported inside the commands, so ``--help`` and ``tasks`` are instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Environment variable for the torch thread count of CLI commands (default 1, see :func:`set_threads`).
THREADS_ENV = "TLENS_ICL_THREADS"

# Vocabularies of the options, spelled here so that parsing imports no torch; tests/test_cli.py checks that
# each equals the library's own list. argparse refuses a value outside them at once, before any model loads.
#: ``tlens_icl.prompts.pairs.CORRUPTIONS`` (``identity`` left out: it is an identity check, not an analysis).
CORRUPTION_NAMES = ("shuffled_labels", "random_labels", "other_task_labels", "zero_shot", "corrupted_query")
#: The built-in prompt templates (``tlens_icl.prompts.templates``).
TEMPLATE_NAMES = ("qa", "arrow")
#: ``tlens_icl.analyses.representations.activations.SITES``.
SITE_NAMES = ("resid_pre", "resid_post", "attn_out", "mlp_out", "z", "head_out")
#: Metrics of the indirect effect (``tlens_icl.engine.scoring.METRICS`` without ``logit_diff``, which needs a
#: second answer).
AIE_METRIC_NAMES = ("prob", "logprob", "rank", "top1")
#: Token roles a region of ``attention-ratio`` can name (``tlens_icl.prompts.batch.ROLES`` that occur in prompts).
REGION_ROLES = ("bos", "separator", "demo_input", "demo_output", "query_input", "answer_position")


def at_least(minimum: int) -> Any:
    """An argparse ``type``: an int ``>= minimum`` (refused at parse time, before any model loads)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def fraction(text: str) -> float:
    """An argparse ``type``: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def region(text: str) -> str:
    """An argparse ``type``: a token role or ``meta:<key>``."""
    if text in REGION_ROLES or (text.startswith("meta:") and len(text) > 5):
        return text
    raise argparse.ArgumentTypeError(f"expected a token role ({', '.join(REGION_ROLES)}) or meta:<key>, got {text!r}")


def task_name(text: str) -> str:
    """An argparse ``type``: a task of the library (closest names suggested; the task module imports no torch)."""
    from tlens_icl.errors import UnknownTaskError
    from tlens_icl.tasks import check_task_name

    try:
        return check_task_name(text)
    except UnknownTaskError as e:  # KeyError's str() quotes the message
        raise argparse.ArgumentTypeError(e.args[0]) from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` after every option that has a meaningful default (not None/False/empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "%(default)" in text or d is None or d is False or d is argparse.SUPPRESS or (
                isinstance(d, (str, list, tuple)) and not d):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
            return f"{text} (default: {default})"
        return text


def add_parser(subparsers: Any, name: str, *, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with the shared help formatter (``description`` defaults to ``help``)."""
    return subparsers.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)


def add_tasks(p: argparse.ArgumentParser, *, nargs: str | None = "+", help: str = "task names (tlens-icl tasks lists them)"
              ) -> None:
    """Positional ``TASK ...`` (the one naming for tasks); the pre-0.2 ``--task``/``--tasks`` still parse (with
    a note), so a required list is checked by :func:`tasks_of` rather than by argparse."""
    required = nargs == "+"
    p.add_argument("task_names", metavar="TASK", nargs="*" if required else nargs,
                   default=[] if nargs in ("*", "+", "?") else None, help=help + (" (one or more)" if required else ""))
    p.add_argument("--task", "--tasks", dest="task_flags", nargs="+", default=None, help=argparse.SUPPRESS)
    p.set_defaults(tasks_required=required)


def tasks_of(args: argparse.Namespace) -> list[str]:
    """The tasks given positionally (or with the deprecated ``--task``/``--tasks``)."""
    from tlens_icl.errors import TlensICLError

    flags = getattr(args, "task_flags", None)
    if flags:
        print("note: --task/--tasks are deprecated; give task names positionally "
              f"(tlens-icl {args.command} {' '.join(flags)} ...)", file=sys.stderr)
    names = args.task_names if isinstance(args.task_names, list) else [args.task_names]
    tasks = [t for t in names if t] + list(flags or [])
    if not tasks and getattr(args, "tasks_required", False):
        raise TlensICLError(f"give at least one task: tlens-icl {args.command} TASK [TASK ...] (tlens-icl tasks lists them)")
    for t in tasks:  # an unknown name fails here, before any model loads
        try:
            task_name(t)
        except argparse.ArgumentTypeError as e:
            raise TlensICLError(str(e)) from None
    return tasks


def add_common(p: argparse.ArgumentParser, *, shots: int | Sequence[int] | None = 10, shots_help: str = "",
               n: int | None = None, n_help: str = "prompts per task") -> None:
    """``--model --seed --template`` (+ ``--shots`` and ``--n`` when given) and the run options."""
    p.add_argument("--model", default="icl-tiny",
                   help="embedded model name (tlens-icl models), local folder, .gguf file or hub name")
    p.add_argument("--seed", type=int, default=0, help="seed for prompts, splits and resampling")
    p.add_argument("--template", default=None, choices=TEMPLATE_NAMES,
                   help="prompt template: qa | arrow (default: the model's own)")
    if shots is not None:
        if isinstance(shots, int):
            p.add_argument("--shots", type=at_least(0), default=shots, help=shots_help or "demonstrations per prompt")
        else:
            p.add_argument("--shots", type=at_least(0), nargs="+", default=list(shots),
                           help=shots_help or "demonstration counts, one condition each")
    if n is not None:
        p.add_argument("--n", type=at_least(1), default=n, help=n_help)
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=at_least(1), default=None,
                   help=f"torch CPU threads (default: ${THREADS_ENV} or 1; see README, Threads)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show progress bars (default: only on a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="never show progress bars")


def add_out(p: argparse.ArgumentParser, what: str = "the result, figures, CSVs and index.html", *,
            resumable: bool = False) -> None:
    p.add_argument("--out", metavar="DIR", default=None, help=f"write {what} to DIR (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to be a non-empty folder (files are replaced)")
    if resumable:
        p.add_argument("--resume", action="store_true",
                       help="continue a run interrupted in --out DIR: units of work finished there (DIR/checkpoint) "
                            "are loaded, not recomputed; the arguments must be the same")


def checkpoint_of(args: argparse.Namespace, out: Path | None) -> Path | None:
    """``DIR/checkpoint`` of a resumable command with ``--out DIR`` (emptied first unless ``--resume``)."""
    import shutil

    if out is None:
        return None
    folder = out / "checkpoint"
    if folder.exists() and not getattr(args, "resume", False):
        shutil.rmtree(folder)  # --overwrite: a fresh run
    return folder


def check_out(args: argparse.Namespace) -> Path | None:
    """The ``--out`` folder, checked before any work: a non-empty folder needs ``--overwrite``."""
    from tlens_icl.errors import TlensICLError

    if getattr(args, "out", None) is None:
        return None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TlensICLError(f"--out {out} is a file, not a folder.")
    if getattr(args, "resume", False) and args.overwrite:
        raise TlensICLError("--resume continues the run in --out; --overwrite starts it again. Pass one of them.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite and not getattr(args, "resume", False):
        resume = ", or --resume an interrupted run" if hasattr(args, "resume") else ""  # only where the command has it
        raise TlensICLError(f"--out {out} is not empty; choose a new folder{' or' if not resume else ','} pass "
                            f"--overwrite{resume}.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def set_threads(args: argparse.Namespace) -> int:
    """Set torch's intra-op threads for a CLI command: ``--threads``, else ``$TLENS_ICL_THREADS``, else 1.

    One thread is the CLI default: measured on a shared 2-core machine, torch's default (all cores) made the
    same call several times slower under load (benchmarks/RESULTS.md, Threads). Library calls never change
    the thread count; see the README.
    """
    import torch

    n = getattr(args, "threads", None) or int(os.environ.get(THREADS_ENV, "1"))
    torch.set_num_threads(n)
    return n


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as the report's settings table (``func`` and internals left out)."""
    skip = {"func", "task_flags", "tasks_required", "overwrite", "resume", "progress", "command"}
    out = {"command": f"tlens-icl {args.command}"}
    for k, v in vars(args).items():
        if k in skip or v is None:
            continue
        out["tasks" if k == "task_names" else k] = " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


def load_model_for(args: argparse.Namespace, tasks: Sequence[str] = ()) -> Any:
    """Load ``--model``; on an embedded model, say which of ``tasks`` it was not trained on (stderr)."""
    from tlens_icl.models import load_model, model_meta

    model = load_model(args.model)
    families = model_meta(model).get("families") or {}
    trained = {t for names in families.values() for t in names}
    unknown = [t for t in tasks if trained and t not in trained]
    if unknown:
        print(f"note: {args.model} was not trained on {', '.join(unknown)}, so expect accuracy near zero (items with "
              f"words it does not know are dropped). Its tasks: {', '.join(sorted(trained))}. For other tasks use a "
              "pretrained model (--model).", file=sys.stderr)
    return model


def finish(args: argparse.Namespace, out: Path | None, sections: Sequence[Any], *, title: str) -> None:
    """Write ``out/index.html`` from report sections and say where everything went."""
    if out is None:
        return
    from tlens_icl.results.report import write_index

    path = write_index(out, title=title, sections=sections, settings=settings_of(args))
    print(f"saved to {out} (open {path})")
