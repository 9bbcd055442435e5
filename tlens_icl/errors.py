"""Exceptions raised by tlens_icl. All are ``ValueError`` subclasses so callers can catch broadly."""


class TlensICLError(ValueError):
    """Base class for every error tlens_icl raises on bad input.

    Every one is a ``ValueError`` too, so one ``except`` catches them all:

    >>> import tlens_icl as ti
    >>> try:
    ...     ti.Task.from_pairs("nothing", [])
    ... except ValueError as e:
    ...     print(type(e).__name__, "-", e)
    EmptyTaskError - Task 'nothing' has no items.
    >>> from tlens_icl.errors import EmptyTaskError, UnknownTaskError
    >>> issubclass(EmptyTaskError, ti.TlensICLError) and issubclass(UnknownTaskError, KeyError)
    True
    """


class UnknownTaskError(TlensICLError, KeyError):
    """A task name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EmptyTaskError(TlensICLError):
    """A task (or a filtered view of it) with no usable items."""


class PromptError(TlensICLError):
    """A prompt that cannot be built for this model (too long, multi-token answer, unknown tokens)."""


class PairMismatchError(TlensICLError):
    """Clean and corrupted prompts whose tokens or roles do not line up."""


class ModelStateError(TlensICLError):
    """A model in the wrong state for an operation (training mode, missing hooks)."""


class ResultFileError(TlensICLError):
    """A saved result that cannot be loaded as it is (missing or truncated file, unknown schema, bad fields)."""


class HookNotFiredError(RuntimeError):
    """A hook tlens_icl installed did not run: the intervention silently did nothing."""


class ModelNotAvailableError(OSError):
    """A model could not be loaded (e.g. the Hugging Face hub is unreachable)."""


class CheckpointMismatchError(TlensICLError):
    """A checkpoint folder that holds units of another run (other arguments, another model)."""


class ModelMismatchError(TlensICLError):
    """Something computed on one model (a vector, an effect map, a checkpoint unit) used on another model."""


class UnsupportedOnBackendError(ModelStateError, NotImplementedError):
    """An analysis that this model's backend cannot run (e.g. per-head patching on vLLM); names the alternative."""


class ItemsDroppedWarning(UserWarning):
    """Items of a task were left out (tokens unknown to the model, multi-token answers filtered, repeats merged):
    the warning gives the counts and an example. Filter it with ``warnings.simplefilter("ignore", ...)``."""
