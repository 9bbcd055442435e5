"""Models: loading by name (embedded, downloaded GGUF, any GGUF file, hub, local folder) and fixes.

``loading`` turns a name into a TransformerLens model in eval mode; ``gguf`` converts GGUF files into
cached folders; ``fixes`` repairs known TransformerLens/transformers mismatches (installed on import
when TransformerLens's bridge is loaded, by ``load_model``, and the first time a model's capabilities are
measured); ``embedded/`` holds the models shipped with the package.
"""

from tlens_icl.models.fixes import ensure_fixes, fix_kv_cache
from tlens_icl.models.gguf import cache_root
from tlens_icl.models.adapter import model_meta, model_tasks
from tlens_icl.models.loading import heldout_task, list_models, load_model

ensure_fixes(import_modules=False)  # free when a bridge module is already imported

__all__ = ["cache_root", "ensure_fixes", "fix_kv_cache", "heldout_task", "list_models", "load_model", "model_meta",
           "model_tasks"]
