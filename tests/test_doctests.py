"""The examples in the public API's docstrings run and print what they say (``doctest``).

Each module in :data:`MODULES` is one test: every ``>>>`` example in its docstrings runs (module, classes,
their methods, functions), and the test fails on a wrong output or when the module holds no example at all
(examples deleted or no longer found). Examples are written to be deterministic and fast: pure helpers, and
the embedded model ``icl-tiny`` (loaded offline) where a model is needed.

Under pytest the functions are wrapped (jaxtyping + beartype type-check ``tlens_icl``; ``_validate.checked``
validates arguments), so the examples run through the type checks, and they are read from the unwrapped
objects, where ``doctest`` can tell the line of a failing example (through a wrapper it reports ``line ?``).
"""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

#: Modules whose docstring examples run here. Give a module examples, then add it.
MODULES = [
    "tlens_icl._typing",
    "tlens_icl._ties",
    "tlens_icl.errors",
    "tlens_icl.tasks",
    "tlens_icl.results.heads",
    "tlens_icl.results.stats",
    "tlens_icl.analyses.accuracy",
    "tlens_icl.viz.html",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def docstring_examples(module_name: str) -> list[doctest.DocTest]:
    """Every doctest of ``module_name`` that holds at least one example: the module's docstring, then each
    function and class defined there (and each class's own methods and properties), unwrapped."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(recurse=False, exclude_empty=True)
    found = finder.find(module, module_name, globs={})

    def visit(obj, name: str) -> None:
        obj = inspect.unwrap(obj)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != module_name:
            return  # defined elsewhere: tested with its own module
        found.extend(finder.find(obj, name, module=module, globs={}))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                member = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                visit(member.fget if isinstance(member, property) else member, f"{name}.{attr}")

    for attr, value in vars(module).items():
        visit(value, f"{module_name}.{attr}")
    return [t for t in found if t.examples]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    tests = docstring_examples(module_name)
    assert tests, f"{module_name} holds no docstring example (MODULES lists it for its examples)"
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    results = [runner.run(t, out=report.append) for t in tests]
    assert sum(r.attempted for r in results) == sum(len(t.examples) for t in tests)
    assert not any(r.failed for r in results), "".join(report)
