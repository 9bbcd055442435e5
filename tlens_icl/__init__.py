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
from .evaluate import AccuracyResult, icl_accuracy
from .metrics import METRICS
from .models import list_models, load_model
from .pairs import CORRUPTIONS, PromptPairBatch, make_prompt_pairs, make_prompts, usable_task
from .prompts import ROLES, PromptBatch
from .tasks import Task, TaskItem, list_tasks, load_task, register_task
from .templates import ARROW, QA, PromptTemplate, register_template

__all__ = [
    "ARROW", "AccuracyResult", "CORRUPTIONS", "EmptyTaskError", "Head", "HookNotFiredError", "METRICS",
    "ModelLike", "ModelNotAvailableError", "ModelStateError", "PairMismatchError", "PromptBatch",
    "PromptError", "PromptPairBatch", "PromptTemplate", "QA", "ROLES", "Task", "TaskItem", "TlensICLError",
    "UnknownTaskError", "icl_accuracy", "list_models", "list_tasks", "load_model", "load_task",
    "make_prompt_pairs", "make_prompts", "register_task", "register_template", "usable_task",
]
