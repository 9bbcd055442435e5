"""tlens_icl: in-context-learning interpretability on TransformerLens 4.

Pipeline: tasks -> prompts/pairs -> runs -> analyses -> results -> viz.
"""

__version__ = "0.1.0"

from ._typing import Head, ModelLike
from .errors import (
    EmptyTaskError,
    HookNotFiredError,
    ModelNotAvailableError,
    ModelStateError,
    PairMismatchError,
    PromptError,
    TlensICLError,
    UnknownTaskError,
)
from .analyses.attribution import Fidelity, attribution_patching, patching_fidelity
from .analyses.mediation import IndirectEffectResult, head_attention_html, indirect_effect
from .analyses.patching import ActivationPatchingResult, HeadPatchingResult, activation_patching, head_patching
from .analyses.compare import ComparisonResult, compare_methods
from .analyses.function_vectors import (FunctionVector, function_vector, function_vector_from_heads,
                                        function_vector_from_task, function_vector_sweep)
from .analyses.icv import InContextVector, apply_icv, in_context_vector
from .analyses.soft_injection import SoftInjection, soft_inject, soft_injection
from .analyses.task_vectors import (TaskVector, patch_task_vector, task_vector, task_vector_from_prompts,
                                    task_vector_sweep)
from .analyses.vectors import LayerSweepResult, add_vector, generate_with_vector, mean_head_activations
from .activations import ActivationSet, collect_activations, task_activations
from .analyses.attention_ratio import AttentionRatioResult, attention_ratio
from .analyses.compare_heads import HeadComparisonResult, compare_heads
from .analyses.decodability import DecodabilityResult, concept_decodability
from .analyses.probing import ProbeResult, probe
from .analyses.rsa import RSAResult, hypothesis_rdm, rdm, rsa
from .evaluate import AccuracyResult, icl_accuracy
from .metrics import METRICS
from .models import heldout_task, list_models, load_model, model_tasks
from .pairs import CORRUPTIONS, PromptPairBatch, make_prompt_pairs, make_prompts, usable_task
from .prompts import ROLES, PromptBatch
from .tasks import Task, TaskItem, list_tasks, load_task, register_task
from .templates import ARROW, QA, PromptTemplate, register_template

__all__ = [
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
    "PromptError", "PromptPairBatch", "PromptTemplate", "QA", "ROLES", "Task", "TaskItem", "TlensICLError",
    "UnknownTaskError", "heldout_task", "icl_accuracy", "model_tasks", "list_models", "list_tasks", "load_model", "load_task",
    "make_prompt_pairs", "make_prompts", "register_task", "register_template", "usable_task",
]
