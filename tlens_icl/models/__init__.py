"""Models: loading by name (embedded, GGUF, hub, local folder) and the model-family adapter.

``loading`` turns a name into a TransformerLens model in eval mode; ``embedded/`` holds the models
shipped with the package.
"""

from tlens_icl.models.loading import (
                                      heldout_task,
                                      list_models,
                                      load_model,
                                      model_meta,
                                      model_tasks,
                                      require_eval_mode,
)

__all__ = ["heldout_task", "list_models", "load_model", "model_meta", "model_tasks", "require_eval_mode"]
