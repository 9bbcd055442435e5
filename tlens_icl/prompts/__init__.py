"""Prompts: templates, rendering with token roles, and clean/corrupted prompt pairs.

``templates`` (how a demonstration looks) -> ``batch`` (render + tokenize into a :class:`PromptBatch`
with per-token roles) -> ``pairs`` (sample episodes, corrupt them, build a :class:`PromptPairBatch`).
"""

from tlens_icl.prompts.batch import ROLE_ID, ROLES, PromptBatch
from tlens_icl.prompts.pairs import (
           CORRUPTIONS,
           PromptPairBatch,
           make_prompt_pairs,
           make_prompts,
           usable_task,
)
from tlens_icl.prompts.templates import (
           ARROW,
           QA,
           PromptTemplate,
           get_template,
           register_template,
)

__all__ = ["ARROW", "CORRUPTIONS", "QA", "ROLES", "ROLE_ID", "PromptBatch", "PromptPairBatch", "PromptTemplate",
           "get_template", "make_prompt_pairs", "make_prompts", "register_template", "usable_task"]
