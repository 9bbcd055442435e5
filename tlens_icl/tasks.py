"""Task definitions: named lists of (input, output) items loaded from ``tasks/*.json`` or built by users.

A :class:`Task` is data only (which items, what answers are accepted); how items are rendered into
prompts lives in :mod:`tlens_icl.prompts.templates` and :mod:`tlens_icl.prompts.pairs`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from tlens_icl import _validate
from tlens_icl.errors import EmptyTaskError, TlensICLError, UnknownTaskError

CATEGORIES = ("knowledge", "procedural", "bitwise", "regression", "reading", "pos", "extractive", "custom")


@dataclass(frozen=True)
class TaskItem:
    """One input/output example. ``alternatives`` are other accepted answers; items sharing a ``group``
    are drawn together into one prompt (e.g. points of one latent linear function).

    >>> from tlens_icl.tasks import TaskItem
    >>> TaskItem("big", "small", alternatives=("little",)).answers
    ('small', 'little')
    >>> TaskItem("big", " small")
    Traceback (most recent call last):
    ...
    tlens_icl.errors.TlensICLError: Task item output ' small' has surrounding whitespace or a newline.
    """

    input: str
    output: str
    alternatives: tuple[str, ...] = ()
    group: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.alternatives, str) or not isinstance(self.alternatives, (tuple, list)):
            raise TlensICLError(
                f"Task item {self.input!r}: alternatives must be a list of strings, got {self.alternatives!r} "
                "(a bare string would be read as one alternative per character)."
            )
        object.__setattr__(self, "alternatives", tuple(self.alternatives))
        texts = [("input", self.input), ("output", self.output)] + [("alternative", a) for a in self.alternatives]
        for label, text in texts:
            if not isinstance(text, str) or not text.strip():
                raise TlensICLError(f"Task item {label} must be a non-empty string, got {text!r}.")
            if text != text.strip() or "\n" in text:
                raise TlensICLError(f"Task item {label} {text!r} has surrounding whitespace or a newline.")

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.output, *self.alternatives)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input": self.input, "output": self.output}
        if self.alternatives:
            d["alternatives"] = list(self.alternatives)
        if self.group is not None:
            d["group"] = self.group
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskItem":
        if not isinstance(d, Mapping):
            raise TlensICLError(f"A task item must be an object with 'input' and 'output', got {d!r}.")
        missing = [k for k in ("input", "output") if k not in d]
        if missing:
            raise TlensICLError(f"Task item {dict(d)!r} has no {' or '.join(repr(k) for k in missing)} field.")
        return cls(
            input=d["input"],
            output=d["output"],
            alternatives=_alternatives(d.get("alternatives"), d["input"]),
            group=d.get("group"),
            meta=dict(d.get("meta") or {}),
        )


def _alternatives(value: Any, where: str) -> tuple[str, ...]:
    """``alternatives`` from JSON or a dataset column: a list of strings (a bare string is an error)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TlensICLError(
            f"Task item {where!r}: alternatives must be a list of strings, got {value!r} "
            "(a bare string would be read as one alternative per character)."
        )
    return tuple(value)


@dataclass(frozen=True)
class Task:
    """A named ICL task: items plus provenance. Immutable; ``filter``/``split`` return new tasks.

    >>> from tlens_icl import Task
    >>> pets = Task.from_pairs("pets", [("cat", "CAT"), ("dog", "DOG"), ("owl", "OWL"), ("cow", "COW")])
    >>> pets
    Task('pets', category='custom', n=4, e.g. 'cat' -> 'CAT')
    >>> pets.filter(lambda item: item.input.startswith("c")).outputs
    ('CAT', 'COW')
    """

    name: str
    items: tuple[TaskItem, ...]
    category: str = "custom"
    description: str = ""
    source: str = ""
    license: str = ""
    concept: str | None = None

    def __post_init__(self) -> None:
        if not self.items:
            raise EmptyTaskError(f"Task {self.name!r} has no items.")
        if self.category not in CATEGORIES:
            raise TlensICLError(f"Task {self.name!r}: unknown category {self.category!r}; use one of {CATEGORIES}.")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        ex = self.items[0]
        return f"Task({self.name!r}, category={self.category!r}, n={len(self)}, e.g. {ex.input!r} -> {ex.output!r})"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The task's output vocabulary (unique outputs, first-seen order)."""
        return tuple(dict.fromkeys(it.output for it in self.items))

    @property
    def groups(self) -> dict[str | None, list[int]]:
        out: dict[str | None, list[int]] = {}
        for i, it in enumerate(self.items):
            out.setdefault(it.group, []).append(i)
        return out

    @property
    def sha256(self) -> str:
        blob = json.dumps([it.to_dict() for it in self.items], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def filter(self, keep: Callable[[TaskItem], bool], *, name: str | None = None) -> "Task":
        """A new task with the items for which ``keep`` is true (raises if none remain)."""
        kept = tuple(it for it in self.items if keep(it))
        if not kept:
            raise EmptyTaskError(f"No items of task {self.name!r} survive the filter.")
        return replace(self, items=kept, name=name or self.name)

    def deduplicated(self) -> tuple["Task", dict[str, int]]:
        """The task without repeated items, and what was removed.

        Items with the same ``group`` and ``input`` are one item: exact repeats are dropped
        (``"duplicates"``); items that give the same input different outputs are merged into the first,
        whose alternatives gain the other outputs (``"conflicts"``: items merged away), so a prompt never
        shows one input with two labels and every stated answer is accepted.

        >>> from tlens_icl import Task
        >>> task = Task.from_pairs("pets", [("cat", "CAT"), ("dog", "DOG"), ("dog", "DOG"), ("cat", "Cat")])
        >>> clean, removed = task.deduplicated()
        >>> removed
        {'duplicates': 1, 'conflicts': 1}
        >>> [item.answers for item in clean.items]
        [('CAT', 'Cat'), ('DOG',)]
        """
        merged: dict[tuple[Any, str], TaskItem] = {}
        dups = conflicts = 0
        for it in self.items:
            key = (it.group, it.input)
            first = merged.get(key)
            if first is None:
                merged[key] = it
                continue
            if it.output == first.output and set(it.alternatives) <= set(first.answers):
                dups += 1
                continue
            conflicts += first.output != it.output
            dups += first.output == it.output
            extra = tuple(a for a in it.answers if a not in first.answers)
            merged[key] = replace(first, alternatives=first.alternatives + extra)
        counts = {"duplicates": dups, "conflicts": conflicts}
        if not dups and not conflicts:
            return self, counts
        return replace(self, items=tuple(merged.values())), counts

    @_validate.checked
    def split(self, test_size: float = 0.3, *, seed: int = 0) -> tuple["Task", "Task"]:
        """Deterministic (train, test) split of the items (by group when the task has groups).

        ``test_size`` is the fraction of items (or groups) in the test split, in (0, 1).

        >>> from tlens_icl import Task
        >>> pets = Task.from_pairs("pets", [("cat", "CAT"), ("dog", "DOG"), ("owl", "OWL"), ("cow", "COW"),
        ...                                 ("ant", "ANT")])
        >>> train, test = pets.split(test_size=0.4, seed=0)
        >>> [item.input for item in train.items], [item.input for item in test.items]
        (['cat', 'cow', 'ant'], ['dog', 'owl'])
        >>> pets.split(test_size=0.4, seed=0) == (train, test)   # the same seed, the same split
        True
        """
        rng = random.Random(seed)
        if set(self.groups) == {None}:  # ungrouped: split items
            idx = list(range(len(self)))
            rng.shuffle(idx)
            cut = max(1, round(len(idx) * test_size))
            if cut >= len(idx):
                raise EmptyTaskError(f"Task {self.name!r} is too small to split (test_size={test_size}).")
            test_idx = set(idx[:cut])
            train = replace(self, items=tuple(it for i, it in enumerate(self.items) if i not in test_idx))
            test = replace(self, items=tuple(it for i, it in enumerate(self.items) if i in test_idx))
            return train, test
        keys = sorted(self.groups, key=str)
        rng.shuffle(keys)
        n_test = max(1, round(len(keys) * test_size))
        if n_test >= len(keys):
            raise EmptyTaskError(f"Task {self.name!r} is too small to split (test_size={test_size}).")
        test_keys = set(keys[:n_test])
        train = self.filter(lambda it: it.group not in test_keys)
        test = self.filter(lambda it: it.group in test_keys)
        return train, test

    # ---- interchange ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "source": self.source,
            "license": self.license,
            "concept": self.concept,
            "items": [it.to_dict() for it in self.items],
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def to_dataset(self) -> Any:
        """The items as a ``datasets.Dataset`` with columns input, output, alternatives, group."""
        import datasets

        return datasets.Dataset.from_dict(
            {
                "input": [it.input for it in self.items],
                "output": [it.output for it in self.items],
                "alternatives": [list(it.alternatives) for it in self.items],
                "group": [it.group or "" for it in self.items],
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Task":
        if not isinstance(d, Mapping) or "name" not in d:
            raise TlensICLError("A task needs a 'name' field (see tasks/README.md for the schema).")
        items = d.get("items")
        if not items:
            raise EmptyTaskError(f"Task {d.get('name')!r} has no items.")
        if not isinstance(items, (list, tuple)):
            raise TlensICLError(f"Task {d['name']!r}: 'items' must be a list of objects, got {type(items).__name__}.")
        return cls(
            name=d["name"],
            items=tuple(TaskItem.from_dict(x) for x in items),
            category=d.get("category", "custom"),
            description=d.get("description", ""),
            source=d.get("source", ""),
            license=d.get("license", ""),
            concept=d.get("concept"),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "Task":
        """A task from a JSON file (``tasks/README.md``); a malformed file raises naming the file and the field."""
        path = _validate.path_arg(path, "path", where="Task.from_json(): ")
        if not path.is_file():
            raise TlensICLError(f"Task.from_json(): no task file at {path}.")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TlensICLError(f"{path}: not valid JSON ({e}).") from e
        try:
            return cls.from_dict(doc)
        except TlensICLError as e:
            raise type(e)(f"{path}: {e}") from e

    @classmethod
    def from_pairs(cls, name: str, pairs: Iterable[tuple[str, str]], **kwargs: Any) -> "Task":
        """Build a task from ``(input, output)`` pairs; extra kwargs set category, description, ..."""
        items = []
        for k, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise TlensICLError(f"Task.from_pairs({name!r}): pair {k} must be an (input, output) pair, got {pair!r}.")
            items.append(TaskItem(pair[0], pair[1]))
        return cls(name=name, items=tuple(items), **kwargs)

    @classmethod
    def from_dataset(
        cls, dataset: Any, name: str, *, input_column: str = "input", output_column: str = "output", **kwargs: Any
    ) -> "Task":
        """Build a task from a ``datasets.Dataset`` (or any mapping of columns) with input/output columns."""
        cols = dataset.column_names if hasattr(dataset, "column_names") else list(dataset)
        for c in (input_column, output_column):
            if c not in cols:
                raise TlensICLError(f"Dataset has no column {c!r}; columns are {cols}.")
        alts = dataset["alternatives"] if "alternatives" in cols else [()] * len(dataset[input_column])
        groups = dataset["group"] if "group" in cols else [None] * len(dataset[input_column])
        for c in (input_column, output_column):
            for row, v in enumerate(dataset[c]):
                if v is None or (isinstance(v, float) and v != v):
                    raise TlensICLError(f"Dataset for task {name!r}: column {c!r} is empty (None) in row {row}; drop or "
                                        "fill that row (it would become the text 'None').")
        items = tuple(
            TaskItem(str(i), str(o), _alternatives(a, str(i)), g or None)
            for i, o, a, g in zip(dataset[input_column], dataset[output_column], alts, groups)
        )
        if not items:
            raise EmptyTaskError(f"Dataset for task {name!r} is empty.")
        return cls(name=name, items=items, **kwargs)


# ---- registry ------------------------------------------------------------------------------------
_USER_TASKS: dict[str, Task] = {}


def task_dir() -> Path:
    """Folder holding the shipped task JSON files (installed copy first, then the source checkout)."""
    installed = Path(__file__).parent / "_tasks"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "tasks"


@lru_cache(maxsize=None)
def _load_shipped(name: str) -> Task:
    return Task.from_json(task_dir() / f"{name}.json")


def _shipped_names() -> list[str]:
    d = task_dir()
    return sorted(p.stem for p in d.glob("*.json") if p.stem != "schema") if d.is_dir() else []


def list_tasks(category: str | None = None) -> list[str]:
    """Names of all available tasks (shipped and user-registered), optionally of one category.

    >>> from tlens_icl import list_tasks
    >>> list_tasks("bitwise")
    ['bitwise_and', 'bitwise_nand', 'bitwise_nor', 'bitwise_or', 'bitwise_xnor', 'bitwise_xor']
    >>> len(list_tasks()) >= 45 and "antonym" in list_tasks()
    True
    """
    names = sorted(set(_shipped_names()) | set(_USER_TASKS))
    if category is None:
        return names
    if category not in CATEGORIES:
        raise TlensICLError(f"Unknown category {category!r}; use one of {CATEGORIES}.")
    return [n for n in names if load_task(n).category == category]


def load_task(name: str | Task) -> Task:
    """Look up a task by name (a :class:`Task` is returned unchanged).

    Raises:
        UnknownTaskError: with the closest names, e.g. ``'antonyms'`` suggests ``'antonym'``.

    >>> import tlens_icl as ti
    >>> task = ti.load_task("bitwise_xor")
    >>> task
    Task('bitwise_xor', category='bitwise', n=256, e.g. '0000 0000' -> '0000')
    >>> ti.load_task("antonyms")
    Traceback (most recent call last):
    ...
    tlens_icl.errors.UnknownTaskError: Unknown task 'antonyms'. Did you mean 'antonym', 'synonym'?

    A task becomes prompts for a model (here the embedded one, loaded offline):

    >>> model = ti.load_model("icl-tiny")
    >>> batch = ti.make_prompts(model, task, n=2, n_shots=2, seed=0)
    >>> print(batch.prompts[0])
    1001 1101 -> 0100
    1100 0100 -> 1000
    0010 1111 ->
    >>> batch.answers[0]
    ' 1101'
    """
    if isinstance(name, Task):
        return name
    check_task_name(name)
    return _USER_TASKS[name] if name in _USER_TASKS else _load_shipped(name)


def check_task_name(name: str) -> str:
    """``name`` when a task of that name exists (nothing is loaded: cheap enough for argument checks).

    Raises:
        UnknownTaskError: with the closest names, e.g. ``'antonyms'`` suggests ``'antonym'``.
    """
    if name in _USER_TASKS or name in _shipped_names():
        return name
    close = difflib.get_close_matches(name, list_tasks(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else " See tlens_icl.list_tasks()."
    raise UnknownTaskError(f"Unknown task {name!r}.{hint}")


def is_user_task(name: str) -> bool:
    """Whether ``name`` was registered with :func:`register_task` in this process (it then shadows a shipped task
    of the same name)."""
    return name in _USER_TASKS


def register_task(task: Task | str | Path, *, overwrite: bool = False) -> Task:
    """Make a task loadable by name. Accepts a :class:`Task` or a path to a JSON file."""
    if not isinstance(task, Task):
        task = Task.from_json(task)
    if not overwrite and (task.name in _USER_TASKS or task.name in _shipped_names()):
        raise TlensICLError(f"A task named {task.name!r} already exists; pass overwrite=True to replace it.")
    _USER_TASKS[task.name] = task
    return task
