"""tlens_icl: in-context-learning interpretability on TransformerLens.

Pipeline, as the folders read: tasks -> prompts -> models -> engine -> analyses/{causal, vectors,
representations} -> results -> viz, with cli/ on top (docs/ARCHITECTURE.md).

Every public name is importable as ``tlens_icl.<name>``. The names are loaded on first use (PEP 562),
so ``import tlens_icl`` and ``tlens-icl --help`` do not pay for importing torch and TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

from tlens_icl import _compat

_compat.install()

#: module -> the public names it provides. Add a new public name here (and nowhere else).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "tlens_icl._typing": ("Head", "ModelLike",),
    "tlens_icl.analyses.accuracy": ("AccuracyResult", "icl_accuracy",),
    "tlens_icl.analyses.causal.attribution": ("Fidelity", "attribution_patching", "patching_fidelity",),
    "tlens_icl.analyses.causal.mediation": ("IndirectEffectResult", "head_attention_html", "indirect_effect",),
    "tlens_icl.analyses.causal.patching": (
        "ActivationPatchingResult", "HeadPatchingResult", "activation_patching", "head_patching",
    ),
    "tlens_icl.analyses.heads.ablation": ("HeadAblationResult", "head_ablation", "random_heads", "select_heads",),
    "tlens_icl.analyses.heads.dynamics": ("HeadDynamicsResult", "head_dynamics",),
    "tlens_icl.analyses.heads.overlap": ("HeadOverlapResult", "head_overlap",),
    "tlens_icl.analyses.heads.scores": ("HeadScoresResult", "head_scores", "lag_scores", "repeated_random_tokens",),
    "tlens_icl.analyses.heads.token_loss": ("TokenLossResult", "token_loss_score",),
    "tlens_icl.analyses.representations.activations": ("ActivationSet", "collect_activations", "task_activations",),
    "tlens_icl.analyses.representations.attention_ratio": ("AttentionRatioResult", "attention_ratio",),
    "tlens_icl.analyses.representations.compare_heads": ("HeadComparisonResult", "compare_heads",),
    "tlens_icl.analyses.representations.decodability": ("DecodabilityResult", "concept_decodability",),
    "tlens_icl.analyses.representations.probing": ("ProbeResult", "probe",),
    "tlens_icl.analyses.representations.rsa": ("RSAResult", "hypothesis_rdm", "rdm", "rsa",),
    "tlens_icl.analyses.vectors.common": ("LayerSweepResult", "mean_head_activations",),
    "tlens_icl.analyses.vectors.compare": ("ComparisonResult", "compare_methods",),
    "tlens_icl.analyses.vectors.function_vectors": (
        "FunctionVector", "function_vector", "function_vector_from_heads", "function_vector_from_task",
        "function_vector_sweep",
    ),
    "tlens_icl.analyses.vectors.icv": ("InContextVector", "in_context_vector",),
    "tlens_icl.analyses.vectors.soft_injection": ("SoftInjection", "soft_injection",),
    "tlens_icl.analyses.vectors.steering": ("SteeringVector", "evaluate_steering", "generate", "steer",),
    "tlens_icl.analyses.vectors.task_vectors": (
        "TaskVector", "task_vector", "task_vector_from_prompts", "task_vector_sweep",
    ),
    "tlens_icl.engine.scoring": ("METRICS",),
    "tlens_icl.errors": (
        "CheckpointMismatchError", "EmptyTaskError", "HookNotFiredError", "ModelNotAvailableError", "ModelStateError",
        "ItemsDroppedWarning", "PairMismatchError", "PromptError", "ResultFileError", "TlensICLError",
        "UnknownTaskError", "UnsupportedOnBackendError",
    ),
    "tlens_icl.models.loading": ("heldout_task", "list_models", "load_model", "model_tasks",),
    "tlens_icl.prompts.batch": ("ROLES", "PromptBatch",),
    "tlens_icl.prompts.pairs": (
        "CORRUPTIONS", "PromptPairBatch", "make_prompt_pairs", "make_prompts", "usable_task",
    ),
    "tlens_icl.prompts.templates": ("ARROW", "QA", "PromptTemplate", "register_template",),
    "tlens_icl.results.base": ("load",),
    "tlens_icl.tasks": ("Task", "TaskItem", "list_tasks", "load_task", "register_task",),
}
_WHERE: dict[str, str] = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Load a public name on first use; ``tlens_icl.pairs`` and the other pre-0.2 submodule attributes
    resolve with a DeprecationWarning."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if f"tlens_icl.{name}" in _compat.MOVED:
        return importlib.import_module(f"tlens_icl.{name}")
    try:
        return importlib.import_module(f"tlens_icl.{name}")  # a subpackage: tlens_icl.analyses, ...
    except ModuleNotFoundError as e:
        if e.name != f"tlens_icl.{name}":
            raise
    raise AttributeError(f"module 'tlens_icl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
