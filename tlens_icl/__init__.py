"""tlens_icl: in-context-learning interpretability on TransformerLens.

Pipeline, as the folders read: tasks -> prompts -> models -> engine -> analyses/{causal, vectors,
representations} -> results -> viz, with cli/ on top (docs/ARCHITECTURE.md).

The top level holds the names a user needs day to day (``tlens_icl.__all__``; the rule is in docs/ARCHITECTURE.md,
"Public API"): loading a model and tasks, building prompts, one entry point per analysis, ``load`` for any saved
result and ``TlensICLError``. Everything else (result classes, constants, helpers, variants of an entry point,
the other errors) is imported from the module that defines it. The names are loaded on first use (PEP 562),
so ``import tlens_icl`` and ``tlens-icl --help`` do not pay for importing torch and TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

#: module -> the top-level names it provides (docs/ARCHITECTURE.md, "Public API": which names are here and why).
#: Everything else stays importable from the module that defines it, and only from there.
_EXPORTS: dict[str, tuple[str, ...]] = {
    # the data path: a model, tasks, prompts, and the types a user writes in their own code
    "tlens_icl._typing": ("Head", "ModelLike"),
    "tlens_icl.models.loading": ("list_models", "load_model"),
    "tlens_icl.tasks": ("Task", "list_tasks", "load_task", "register_task"),
    "tlens_icl.prompts.templates": ("PromptTemplate",),
    "tlens_icl.prompts.pairs": ("make_prompt_pairs", "make_prompts"),
    # one entry point per analysis: takes a model, returns that analysis's result
    "tlens_icl.analyses.accuracy": ("icl_accuracy",),
    "tlens_icl.analyses.causal.mediation": ("indirect_effect",),
    "tlens_icl.analyses.causal.patching": ("activation_patching", "head_patching"),
    "tlens_icl.analyses.causal.attribution": ("attribution_patching",),
    "tlens_icl.analyses.heads.scores": ("head_scores",),
    "tlens_icl.analyses.heads.token_loss": ("token_loss_score",),
    "tlens_icl.analyses.heads.ablation": ("head_ablation",),
    "tlens_icl.workflows.dynamics": ("head_dynamics",),
    "tlens_icl.analyses.vectors.function_vectors": ("function_vector",),
    "tlens_icl.analyses.vectors.task_vectors": ("task_vector",),
    "tlens_icl.analyses.vectors.icv": ("in_context_vector",),
    "tlens_icl.analyses.vectors.soft_injection": ("soft_injection",),
    "tlens_icl.analyses.vectors.steering": ("SteeringVector", "evaluate_steering", "generate", "steer"),
    "tlens_icl.workflows.compare": ("compare_methods",),
    "tlens_icl.analyses.representations.activations": ("collect_activations", "task_activations"),
    "tlens_icl.analyses.representations.decodability": ("concept_decodability",),
    "tlens_icl.analyses.representations.rsa": ("rsa",),
    "tlens_icl.analyses.representations.probing": ("probe",),
    "tlens_icl.analyses.representations.attention_ratio": ("attention_ratio",),
    # any saved result, and the error every bad input raises
    "tlens_icl.results.base": ("load",),
    "tlens_icl.errors": ("TlensICLError",),
}
_WHERE: dict[str, str] = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Load a top-level name on first use; a subpackage (``tlens_icl.analyses``) is imported on first use too."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"tlens_icl.{name}")  # a subpackage: tlens_icl.analyses, ...
    except ModuleNotFoundError as e:
        if e.name != f"tlens_icl.{name}":
            raise
    raise AttributeError(f"module 'tlens_icl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
