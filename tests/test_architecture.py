"""The package's layering (docs/ARCHITECTURE.md): no import runs upward, there are no import cycles, and no
module uses another module's private names.

Every ``import``/``from ... import`` of a ``tlens_icl`` module anywhere in a file (module level or inside a
function) is an edge. A module may import its own layer or a lower one; ``tlens_icl/__init__.py`` (the
public facade) and ``__main__`` may import anything.

Private names (docs/ARCHITECTURE.md, "Public API"): a ``_name`` defined in a module is used only by that module
(``from X import _name`` and ``X._name`` are refused elsewhere); a private module ``pkg/_mod.py`` is imported only
by modules inside ``pkg``, so the root's ``_typing``, ``_validate`` and ``_ties`` are shared by the whole package.
Aliasing a public name as private (``from tlens_icl.engine import query as _engine``) is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tlens_icl"

#: lowest first; the first path component below tlens_icl decides a module's layer.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_typing", "_validate", "_ties"),
    ("tasks",),
    ("models",),
    ("prompts",),
    ("engine",),
    ("viz",),
    ("results",),
    ("analyses",),
    ("workflows",),
    ("cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
FACADES = {"tlens_icl", "tlens_icl.__main__"}


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, pkg: Path = PKG) -> set[str]:
    mod = module_name(path, pkg)
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tlens_icl")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("tlens_icl"):
                out.add(target)
                for a in node.names:  # "from tlens_icl.engine import hooks" imports a module
                    sub = pkg.parent / f"{target}.{a.name}".replace(".", "/")
                    if sub.is_dir() or sub.with_suffix(".py").exists():
                        out.add(f"{target}.{a.name}")
    return out


def layer(mod: str) -> int | None:
    parts = mod.split(".")
    if len(parts) < 2:
        return None
    return RANK.get(parts[1])


def all_modules(pkg: Path = PKG) -> dict[str, set[str]]:
    return {module_name(p, pkg): imports(p, pkg) for p in pkg.rglob("*.py")}


def upward_imports(pkg: Path = PKG) -> list[str]:
    upward = []
    for mod, targets in all_modules(pkg).items():
        if mod in FACADES:
            continue
        upward += [f"{mod} -> {t}" for t in targets if (lt := layer(t)) is not None and lt > layer(mod)]
    return sorted(upward)


def test_every_module_has_a_layer():
    unknown = sorted(m for m in all_modules() if m not in FACADES and layer(m) is None)
    assert not unknown, f"modules outside every layer (add them to LAYERS and docs/ARCHITECTURE.md): {unknown}"


def test_no_upward_imports():
    upward = upward_imports()
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_analyses_do_not_know_the_command_line():
    offenders = [m for m, targets in all_modules().items() if m.startswith("tlens_icl.analyses")
                 and any(t.startswith("tlens_icl.cli") or t == "argparse" for t in targets)]
    assert not offenders
    for path in (PKG / "analyses").rglob("*.py"):
        assert "argparse" not in path.read_text(), path


def test_no_import_cycles_between_modules():
    graph = all_modules()
    known = set(graph)

    def resolve(t: str) -> str | None:
        while t and t not in known:
            t = t.rpartition(".")[0]
        return t or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m and r not in FACADES and not m.startswith(r + ".")}
             for m, ts in graph.items() if m not in FACADES}
    # package __init__ files re-export their children; an edge child -> its own package is not a cycle.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                cycle.extend(stack[stack.index(n):] + [m, n] if n in stack else [m, n])
                return True
            if state.get(n) is None and visit(n, stack + [m]):
                return True
        state[m] = 2
        return False

    for m in sorted(edges):
        if state.get(m) is None and visit(m, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_layer_test_sees_a_planted_upward_import(tmp_path):
    """A copy of the package with one lazy ``engine -> analyses`` import planted fails the scan."""
    import shutil

    copy = tmp_path / "tlens_icl"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors", "*.json"))
    runs = copy / "engine" / "runs.py"
    runs.write_text(runs.read_text() + "\n\ndef _planted():\n    from tlens_icl.analyses import accuracy\n")
    assert upward_imports(copy) == ["tlens_icl.engine.runs -> tlens_icl.analyses", "tlens_icl.engine.runs -> tlens_icl.analyses.accuracy"]


# ---- private names stay in their module ------------------------------------------------------------
#: Known uses, each to be removed by the change that fixes it (an entry that no longer occurs fails the test).
#: ``analyses/vectors/*`` is being rewritten on branch api-steer (one steering object); ``_as_vector`` goes with it.
KNOWN_PRIVATE_USES: set[str] = set()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(name: str, pkg: Path) -> bool:
    path = pkg.parent / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").exists()


def _private_module_refused(target: str, importer: str) -> bool:
    """``target`` (a module path) passes through a private module that ``importer`` may not use: one whose
    package is neither the root nor a package holding ``importer``."""
    parts = target.split(".")
    for i, part in enumerate(parts[1:], start=1):
        package = ".".join(parts[:i])
        if _private(part) and package != "tlens_icl" and not importer.startswith(package + "."):
            return True
    return False


def private_uses(path: Path, pkg: Path = PKG) -> list[str]:
    """``from X import _name``, ``X._name`` and imports of another package's private module in one file."""
    mod = module_name(path, pkg)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    bound: dict[str, str] = {}  # a local name -> the tlens_icl module or module.name it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tlens_icl"):
                    bound[a.asname or "tlens_icl"] = a.name if a.asname else "tlens_icl"
                    if _private_module_refused(a.name, mod):
                        found.append(f"{mod}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tlens_icl"):
                continue
            if _private_module_refused(target, mod):
                found.append(f"{mod}: from {target} import ...")
            for a in node.names:
                full = f"{target}.{a.name}"
                bound[a.asname or a.name] = full
                if _is_module(full, pkg):
                    if _private_module_refused(full, mod):
                        found.append(f"{mod}: from {target} import {a.name}")
                elif _private(a.name) and target != mod:
                    found.append(f"{mod}: from {target} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                owner = ".".join([bound[value.id], *reversed(chain)])
                if owner != mod:
                    found.append(f"{mod}: {owner}.{node.attr}")
    return found


def all_private_uses(pkg: Path = PKG) -> set[str]:
    return {use for path in sorted(pkg.rglob("*.py")) for use in private_uses(path, pkg)}


def test_no_module_uses_another_modules_private_names():
    found = all_private_uses()
    new = sorted(found - KNOWN_PRIVATE_USES)
    assert not new, "private names used outside their module (make them public in their home module):\n" + \
        "\n".join(new)
    stale = sorted(KNOWN_PRIVATE_USES - found)
    assert not stale, f"fixed: remove from KNOWN_PRIVATE_USES: {stale}"


def test_the_private_name_test_sees_planted_uses(tmp_path):
    """A copy of the package with four planted uses: a private function imported from another module, a private
    attribute of an imported module, a private name of a module imported by alias, and another package's private
    module. An alias of a public name as private, and a private module used inside its own package, pass."""
    import shutil

    copy = tmp_path / "tlens_icl"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors", "*.json"))
    plots = copy / "viz" / "plots.py"
    plots.write_text(plots.read_text() + (
        "\n\ndef _planted(model):\n"
        "    from tlens_icl.engine.runs import _forced_rows\n"
        "    from tlens_icl.engine import runs\n"
        "    import tlens_icl.engine.query as Q\n"
        "    from tlens_icl.models.embedded._data import TaskData\n"
        "    from tlens_icl.engine import query as _engine\n"
        "    return _forced_rows, runs._device(model), Q._check_gone, TaskData, _engine.query_interventions\n"))
    planted = all_private_uses(copy) - all_private_uses()
    assert planted == {
        "tlens_icl.viz.plots: from tlens_icl.engine.runs import _forced_rows",
        "tlens_icl.viz.plots: tlens_icl.engine.runs._device",
        "tlens_icl.viz.plots: tlens_icl.engine.query._check_gone",
        "tlens_icl.viz.plots: from tlens_icl.models.embedded._data import ...",
    }, planted
