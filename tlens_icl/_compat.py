"""Old module paths (release 0.1) kept importable for one release, with a ``DeprecationWarning``.

Release 0.2 grouped the package into ``prompts/``, ``models/``, ``engine/``, ``analyses/{causal,
vectors,representations}/``, ``results/``, ``viz/`` and ``cli/``. Names exported by ``tlens_icl``
itself did not move; only code importing a submodule path (``tlens_icl.pairs``) sees the warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

#: old module path -> new module path
MOVED: dict[str, str] = {
    "tlens_icl.templates": "tlens_icl.prompts.templates",
    "tlens_icl.pairs": "tlens_icl.prompts.pairs",
    "tlens_icl.embedded": "tlens_icl.models.embedded",
    "tlens_icl.embedded.train": "tlens_icl.models.embedded.train",
    "tlens_icl.embedded.card": "tlens_icl.cli.card",
    "tlens_icl.hooks": "tlens_icl.engine.hooks",
    "tlens_icl.runs": "tlens_icl.engine.runs",
    "tlens_icl.metrics": "tlens_icl.engine.scoring",
    "tlens_icl.evaluate": "tlens_icl.analyses.accuracy",
    "tlens_icl.activations": "tlens_icl.analyses.representations.activations",
    "tlens_icl.analyses.patching": "tlens_icl.analyses.causal.patching",
    "tlens_icl.analyses.mediation": "tlens_icl.analyses.causal.mediation",
    "tlens_icl.analyses.attribution": "tlens_icl.analyses.causal.attribution",
    "tlens_icl.analyses.function_vectors": "tlens_icl.analyses.vectors.function_vectors",
    "tlens_icl.analyses.task_vectors": "tlens_icl.analyses.vectors.task_vectors",
    "tlens_icl.analyses.icv": "tlens_icl.analyses.vectors.icv",
    "tlens_icl.analyses.soft_injection": "tlens_icl.analyses.vectors.soft_injection",
    "tlens_icl.analyses.compare": "tlens_icl.workflows.compare",
    "tlens_icl.analyses.decodability": "tlens_icl.analyses.representations.decodability",
    "tlens_icl.analyses.rsa": "tlens_icl.analyses.representations.rsa",
    "tlens_icl.analyses.probing": "tlens_icl.analyses.representations.probing",
    "tlens_icl.analyses.attention_ratio": "tlens_icl.analyses.representations.attention_ratio",
    "tlens_icl.analyses.compare_heads": "tlens_icl.analyses.representations.compare_heads",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path to the module at its new path (the same module object)."""

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in the next release.",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        # importlib stamped the alias spec on the module; give it back its own.
        module.__spec__ = self._specs[module.__spec__.name]


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
