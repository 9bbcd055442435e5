"""tlens_icl: in-context-learning interpretability on TransformerLens.

Pipeline, as the folders read: tasks -> prompts -> models -> engine -> analyses/{causal, vectors,
representations} -> results -> viz, with cli/ on top (docs/ARCHITECTURE.md).
"""

__version__ = "0.2.0"

from tlens_icl import _compat

_compat.install()

from tlens_icl._typing import Head, ModelLike
from tlens_icl.analyses.accuracy import AccuracyResult, icl_accuracy
from tlens_icl.analyses.causal.attribution import (
    Fidelity,
    attribution_patching,
    patching_fidelity,
)
from tlens_icl.analyses.causal.mediation import (
    IndirectEffectResult,
    head_attention_html,
    indirect_effect,
)
from tlens_icl.analyses.causal.patching import (
    ActivationPatchingResult,
    HeadPatchingResult,
    activation_patching,
    head_patching,
)
from tlens_icl.analyses.heads.ablation import (
    HeadAblationResult,
    head_ablation,
    random_heads,
    select_heads,
)
from tlens_icl.analyses.heads.dynamics import HeadDynamicsResult, head_dynamics
from tlens_icl.analyses.heads.overlap import HeadOverlapResult, head_overlap
from tlens_icl.analyses.heads.scores import (
    HeadScoresResult,
    head_scores,
    repeated_random_tokens,
)
from tlens_icl.analyses.heads.token_loss import TokenLossResult, token_loss_score
from tlens_icl.analyses.representations.activations import (
    ActivationSet,
    collect_activations,
    task_activations,
)
from tlens_icl.analyses.representations.attention_ratio import (
    AttentionRatioResult,
    attention_ratio,
)
from tlens_icl.analyses.representations.compare_heads import (
    HeadComparisonResult,
    compare_heads,
)
from tlens_icl.analyses.representations.decodability import (
    DecodabilityResult,
    concept_decodability,
)
from tlens_icl.analyses.representations.probing import ProbeResult, probe
from tlens_icl.analyses.representations.rsa import RSAResult, hypothesis_rdm, rdm, rsa
from tlens_icl.analyses.vectors.common import (
    LayerSweepResult,
    add_vector,
    generate_with_vector,
    mean_head_activations,
)
from tlens_icl.analyses.vectors.compare import ComparisonResult, compare_methods
from tlens_icl.analyses.vectors.function_vectors import (
    FunctionVector,
    function_vector,
    function_vector_from_heads,
    function_vector_from_task,
    function_vector_sweep,
)
from tlens_icl.analyses.vectors.icv import InContextVector, apply_icv, in_context_vector
from tlens_icl.analyses.vectors.soft_injection import (
    SoftInjection,
    soft_inject,
    soft_injection,
)
from tlens_icl.analyses.vectors.task_vectors import (
    TaskVector,
    patch_task_vector,
    task_vector,
    task_vector_from_prompts,
    task_vector_sweep,
)
from tlens_icl.engine.scoring import METRICS
from tlens_icl.errors import (
    EmptyTaskError,
    HookNotFiredError,
    ModelNotAvailableError,
    ModelStateError,
    PairMismatchError,
    PromptError,
    ResultFileError,
    TlensICLError,
    UnknownTaskError,
)
from tlens_icl.models.loading import heldout_task, list_models, load_model, model_tasks
from tlens_icl.prompts.batch import ROLES, PromptBatch
from tlens_icl.prompts.pairs import (
    CORRUPTIONS,
    PromptPairBatch,
    make_prompt_pairs,
    make_prompts,
    usable_task,
)
from tlens_icl.prompts.templates import ARROW, QA, PromptTemplate, register_template
from tlens_icl.tasks import Task, TaskItem, list_tasks, load_task, register_task

__all__ = [
    "HeadAblationResult", "HeadDynamicsResult", "HeadOverlapResult", "HeadScoresResult", "TokenLossResult",
    "head_ablation", "head_dynamics", "head_overlap", "head_scores", "random_heads", "repeated_random_tokens",
    "select_heads", "token_loss_score",
    "ActivationSet", "AttentionRatioResult", "DecodabilityResult", "HeadComparisonResult", "ProbeResult", "RSAResult",
    "attention_ratio", "collect_activations", "compare_heads", "concept_decodability", "hypothesis_rdm", "probe",
    "rdm", "rsa", "task_activations",
    "ComparisonResult", "FunctionVector", "InContextVector", "LayerSweepResult", "SoftInjection", "TaskVector",
    "add_vector", "apply_icv", "compare_methods", "generate_with_vector", "function_vector", "function_vector_from_heads",
    "function_vector_from_task", "function_vector_sweep", "in_context_vector", "mean_head_activations",
    "patch_task_vector", "soft_inject", "soft_injection", "task_vector", "task_vector_from_prompts",
    "task_vector_sweep",
    "ActivationPatchingResult", "Fidelity", "HeadPatchingResult", "IndirectEffectResult", "activation_patching",
    "attribution_patching", "head_attention_html", "head_patching", "indirect_effect", "patching_fidelity",
    "ARROW", "AccuracyResult", "CORRUPTIONS", "EmptyTaskError", "Head", "HookNotFiredError", "METRICS",
    "ModelLike", "ModelNotAvailableError", "ModelStateError", "PairMismatchError", "PromptBatch",
    "PromptError", "PromptPairBatch", "ResultFileError", "PromptTemplate", "QA", "ROLES", "Task", "TaskItem", "TlensICLError",
    "UnknownTaskError", "heldout_task", "icl_accuracy", "model_tasks", "list_models", "list_tasks", "load_model", "load_task",
    "make_prompt_pairs", "make_prompts", "register_task", "register_template", "usable_task",
]


def __getattr__(name: str):
    """``tlens_icl.pairs`` and the other pre-0.2 submodule attributes, with a DeprecationWarning."""
    if f"tlens_icl.{name}" in _compat.MOVED:
        import importlib

        return importlib.import_module(f"tlens_icl.{name}")
    raise AttributeError(f"module 'tlens_icl' has no attribute {name!r}")
