"""Every Sphinx cross-reference in the package's docstrings names an object that exists (docs/ARCHITECTURE.md,
"Public API"): ``:func:``, ``:class:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``, ``:exc:``, ``:obj:``.

A target is resolved as Sphinx would: ``~`` and a trailing ``()`` are dropped; a dotted path that starts with a
module is imported and walked with ``getattr`` (``tlens_icl.prompts.pairs.CORRUPTIONS``, ``pathlib.Path``); a bare
name is looked up in the enclosing class, then in the docstring's own module; ``.name`` is relative to the
module's package. Each module is imported once (seconds: no model is loaded).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

PKG = Path(__file__).resolve().parent.parent / "tlens_icl"
ROLE = re.compile(r":(func|class|meth|attr|mod|data|exc|obj|const):`([^`]+)`")
#: References in files that other branches are rewriting; each is fixed there. An entry that resolves fails the
#: test, so the list only shrinks. ``analyses/vectors/*``: branch api-steer (one steering object replaces the
#: six ways to apply a vector); ``analyses/causal/mediation.py``: main.
KNOWN_UNRESOLVED: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def docstrings(tree: ast.Module) -> list[tuple[str | None, str]]:
    """``(enclosing class or None, docstring)`` of the module and of every class and function in it."""
    out: list[tuple[str | None, str]] = []

    def visit(node: ast.AST, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name if isinstance(child, ast.ClassDef) else cls
                if (doc := ast.get_docstring(child, clean=False)) is not None:
                    out.append((inner, doc))
                visit(child, inner)
            else:
                visit(child, cls)

    if (doc := ast.get_docstring(tree, clean=False)) is not None:
        out.append((None, doc))
    visit(tree, None)
    return out


def _walk(obj: Any, names: list[str]) -> Any:
    for name in names:
        obj = getattr(obj, name)
    return obj


def resolve_path(dotted: str) -> Any:
    """``a.b.c``: import the longest importable module prefix, then ``getattr`` the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return _walk(importlib.import_module(name), parts[i:])
    raise LookupError(f"no module in {dotted!r}")


def resolve(target: str, module: ModuleType, cls: str | None) -> Any:
    """The object a reference names, as seen from a docstring in ``module`` (inside class ``cls``)."""
    target = target.split("<")[-1].rstrip(">") if "<" in target else target  # :func:`title <target>`
    target = target.strip().lstrip("~").removesuffix("()")
    if target.startswith("."):
        package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
        return resolve_path(package + target)
    head, *rest = target.split(".")
    owner = getattr(module, cls, None) if cls else None
    if owner is not None and hasattr(owner, head):
        return _walk(getattr(owner, head), rest)
    if hasattr(module, head):
        return _walk(getattr(module, head), rest)
    if rest:  # a full path: tlens_icl.x.y, pathlib.Path
        return resolve_path(target)
    raise LookupError(f"{head!r} is neither in the class nor in the module")


def unresolved_references(source: str, module: ModuleType, label: str) -> list[str]:
    """``"label: :role:`target`"`` for every reference in ``source``'s docstrings that does not resolve."""
    bad = []
    for cls, doc in docstrings(ast.parse(source)):
        for role, target in ROLE.findall(doc):
            try:
                resolve(target, module, cls)
            except (LookupError, AttributeError, ImportError):
                bad.append(f"{label}: :{role}:`{target}`")
    return bad


def all_unresolved() -> set[str]:
    bad: set[str] = set()
    for path in sorted(PKG.rglob("*.py")):
        name = module_name(path)
        if name == "tlens_icl.__main__":  # runs the command line on import
            continue
        label = path.relative_to(PKG.parent).as_posix()
        bad |= set(unresolved_references(path.read_text(encoding="utf-8"), importlib.import_module(name), label))
    return bad


def test_every_docstring_reference_resolves():
    bad = all_unresolved()
    new = sorted(bad - KNOWN_UNRESOLVED)
    assert not new, "docstring references to nothing (use the defining module's path):\n" + "\n".join(new)
    stale = sorted(KNOWN_UNRESOLVED - bad)
    assert not stale, f"fixed: remove from KNOWN_UNRESOLVED: {stale}"


def test_the_reference_test_sees_planted_references():
    """A module's real source plus a function whose docstring holds four bad references (a 0.2 module path, a
    name no longer at the top level, a misspelt function, a method its class lacks) and four good ones."""
    import tlens_icl.tasks as tasks

    planted = (tasks.__file__ and Path(tasks.__file__).read_text(encoding="utf-8")) + '''

def _planted():
    """:data:`~tlens_icl.pairs.CORRUPTIONS`, :func:`tlens_icl.usable_task`, :func:`lod_task`, :meth:`Task.no_such`;
    :data:`~tlens_icl.prompts.pairs.CORRUPTIONS`, :func:`tlens_icl.load_task`, :meth:`Task.from_pairs`,
    :class:`~pathlib.Path`."""
'''
    assert unresolved_references(planted, tasks, "planted") == [
        "planted: :data:`~tlens_icl.pairs.CORRUPTIONS`", "planted: :func:`tlens_icl.usable_task`",
        "planted: :func:`lod_task`", "planted: :meth:`Task.no_such`"]
