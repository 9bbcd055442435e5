"""The experiment protocol: which prompts an analysis runs on, as one frozen object.

A :class:`PromptSpec` names the tasks, the prompt count, the shots, the corruption, the template and one
seed, and hands out **named prompt streams**, each drawn with its own seed:

============== ==================================================== =====================================
stream          what it is for                                       seed
============== ==================================================== =====================================
``clean``       the prompts an analysis measures (clean side of the   ``spec.seed`` itself: the same prompts
                pairs; the corrupted side is drawn from it inside     as ``make_prompt_pairs(..., seed=spec.seed)``
                :func:`~tlens_icl.prompts.pairs.make_prompt_pairs`)
``mean``        prompts averaged into a mean activation (AIE)        derived from ``(seed, "mean")``
``validation``  prompts that choose a parameter (layer, strength)    derived from ``(seed, "validation")``
``fit``         prompts that build a vector or train an injection    derived from ``(seed, "fit")``
============== ==================================================== =====================================

A derived seed is the first 63 bits of SHA-256 of ``"<seed>:<stream>"`` (:func:`stream_seed`), so two
streams never coincide by accident: in release 0.2 ``indirect_effect(seed=s)`` drew its mean prompts with
``seed + 1``, which were exactly the clean prompts of a run with ``seed = s + 1``. The whole spec is
recorded in every result's ``info["spec"]`` (:meth:`PromptSpec.info`), stream seeds included.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from tlens_icl._typing import ModelLike
from tlens_icl._validate import choice, integer
from tlens_icl.errors import TlensICLError
from tlens_icl.prompts.batch import PromptBatch
from tlens_icl.prompts.pairs import CORRUPTIONS, PromptPairBatch, make_prompt_pairs, make_prompts
from tlens_icl.prompts.templates import PromptTemplate
from tlens_icl.tasks import Task

#: The named prompt streams of a spec (see the module docstring).
Stream = Literal["clean", "mean", "validation", "fit"]
STREAMS: tuple[str, ...] = get_args(Stream)


def stream_seed(seed: int, stream: str) -> int:
    """The seed of ``stream``: ``seed`` itself for ``"clean"``, else 63 bits of SHA-256 of ``"<seed>:<stream>"``.

    >>> stream_seed(0, "clean")
    0
    >>> stream_seed(0, "mean") == stream_seed(0, "mean") != stream_seed(1, "mean")
    True
    """
    choice(stream, "stream", STREAMS, where="PromptSpec: ")
    if stream == "clean":
        return int(seed)
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF


def _task_name(task: Task | str) -> str:
    return task if isinstance(task, str) else task.name


@dataclass(frozen=True)
class PromptSpec:
    """What prompts an experiment runs on: tasks, count, shots, corruption, template, seed.

    ``n`` is the size of the measured (``clean``) stream; a stream of another size is asked for with
    ``spec.prompts(model, "mean", n=100)``. ``other_task`` is the label source of
    ``corruption="other_task_labels"``. Every entry point that takes ``tasks`` also takes a spec instead,
    and records ``spec.info()`` in its result.

    >>> spec = PromptSpec(("antonym",), n=8, n_shots=4, seed=3)
    >>> spec.seed_of("clean"), spec.seed_of("mean") != spec.seed_of("fit")
    (3, True)
    """

    tasks: tuple[Task | str, ...]
    n: int = 32
    n_shots: int = 10
    corruption: str = "shuffled_labels"
    template: PromptTemplate | str | None = None
    seed: int = 0
    other_task: Task | str | None = field(default=None)

    def __post_init__(self) -> None:
        tasks = (self.tasks,) if isinstance(self.tasks, (str, Task)) else tuple(self.tasks)
        if not tasks:
            raise TlensICLError("PromptSpec needs at least one task.")
        for t in tasks:
            if not isinstance(t, (str, Task)):
                raise TlensICLError(f"PromptSpec: tasks must be task names or Task objects, got {t!r}.")
        object.__setattr__(self, "tasks", tasks)
        integer(self.n, "n", minimum=1, where="PromptSpec: ")
        integer(self.n_shots, "n_shots", minimum=0, where="PromptSpec: ")
        integer(self.seed, "seed", minimum=0, where="PromptSpec: ")
        if self.corruption not in CORRUPTIONS:
            raise TlensICLError(f"PromptSpec: unknown corruption {self.corruption!r}; choose one of "
                                f"{sorted(CORRUPTIONS)}.")

    @classmethod
    def of(cls, tasks: "PromptSpec | Task | str | Sequence[Task | str]", **fields: Any) -> "PromptSpec":
        """``tasks`` as a spec: a spec is returned as is (``fields`` must then be empty), else one is built."""
        if isinstance(tasks, PromptSpec):
            return tasks
        return cls(tuple([tasks] if isinstance(tasks, (str, Task)) else tasks), **fields)

    def seed_of(self, stream: Stream) -> int:
        """The seed ``stream`` is drawn with (:func:`stream_seed`)."""
        return stream_seed(self.seed, stream)

    def derive(self, label: str) -> "PromptSpec":
        """The same spec with a seed derived from ``label`` (a sub-experiment whose streams are independent of
        this one's, e.g. the FV heads that ``compare_methods`` finds on the train split)."""
        digest = hashlib.sha256(f"{self.seed}:derive:{label}".encode()).digest()
        return replace(self, seed=int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF)

    def prompts(self, model: ModelLike, stream: Stream = "clean", *, task: Task | str | None = None,
                n: int | None = None, n_shots: int | None = None,
                demos_from: Task | str | None = None) -> PromptBatch:
        """``n`` (default ``spec.n``) clean prompts of ``task`` (default: the spec's only task) from ``stream``."""
        return make_prompts(model, self._task(task), n=self.n if n is None else n,
                            n_shots=self.n_shots if n_shots is None else n_shots, seed=self.seed_of(stream),
                            template=self.template, demos_from=demos_from)

    def pairs(self, model: ModelLike, *, task: Task | str | None = None, n: int | None = None) -> PromptPairBatch:
        """The clean/corrupted pairs of ``task`` (the ``clean`` stream; its corruption drawn inside)."""
        return make_prompt_pairs(model, self._task(task), n=self.n if n is None else n, n_shots=self.n_shots,
                                 corruption=self.corruption, seed=self.seed_of("clean"), template=self.template,
                                 other_task=self.other_task)

    def _task(self, task: Task | str | None) -> Task | str:
        if task is None:
            if len(self.tasks) != 1:
                raise TlensICLError(f"This spec has {len(self.tasks)} tasks; name one (task=...).")
            return self.tasks[0]
        return task

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(_task_name(t) for t in self.tasks)

    def info(self, **sizes: int) -> dict[str, Any]:
        """The spec as JSON-able provenance: every field, and the seed of every stream (``sizes``: the counts
        drawn from streams other than ``clean``, e.g. ``mean=100``)."""
        tpl = self.template
        return {"tasks": list(self.task_names), "n": self.n, "n_shots": self.n_shots, "corruption": self.corruption,
                "template": getattr(tpl, "name", tpl), "seed": self.seed,
                "other_task": None if self.other_task is None else _task_name(self.other_task),
                "stream_seeds": {s: self.seed_of(s) for s in STREAMS}, **({"sizes": sizes} if sizes else {})}


def _changed(entry: Callable[..., Any], values: dict[str, Any]) -> list[str]:
    """The arguments in ``values`` (by name) that differ from ``entry``'s defaults, read from its signature."""
    params = inspect.signature(entry).parameters
    return [k for k, v in values.items() if not (v is params[k].default or v == params[k].default)]


def spec_of(tasks: "PromptSpec | Task | str | Sequence[Task | str]", entry: Callable[..., Any],
            **fields: Any) -> PromptSpec:
    """The spec the entry point ``entry`` runs on: ``tasks`` if it is one (then ``fields``, ``entry``'s protocol
    arguments, named as the spec's fields, must be at their defaults: a spec fixes them), else a spec built from
    ``fields``."""
    if isinstance(tasks, PromptSpec):
        changed = _changed(entry, fields)
        if changed:
            raise TlensICLError(f"{entry.__name__}(): {changed} are fixed by the PromptSpec given; set them on the "
                                "spec (dataclasses.replace(spec, ...)) instead.")
        return tasks
    return PromptSpec.of(tasks, **fields)


def protocol_defaults(entry: Callable[..., Any], **arguments: Any) -> None:
    """Raise if a data-level call of ``entry`` (prompts given) sets a protocol argument, which the prompts fix."""
    changed = _changed(entry, arguments)
    if changed:
        raise TlensICLError(f"{entry.__name__}(): {changed} choose prompts, but the prompts were given; leave them "
                            "out (or pass tasks / a PromptSpec instead of prompts).")


__all__ = ["STREAMS", "PromptSpec", "Stream", "protocol_defaults", "spec_of", "stream_seed"]
