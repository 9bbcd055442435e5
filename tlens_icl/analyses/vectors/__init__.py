"""Task-level vectors: function vectors, task vectors, in-context vectors, soft injection, comparison."""
