"""Progress bars for long calls (``tqdm.auto``): on in notebooks and terminals, off otherwise or when asked.

Every long-running entry point takes ``progress: bool | None = None``. ``True``/``False`` force the bar on
or off; ``None`` (the default) follows the environment variable ``TLENS_ICL_PROGRESS`` (``0``/``1``) and
otherwise shows a bar only when the call runs interactively: in a Jupyter kernel or with stderr on a
terminal, and only once the call has taken longer than half a second (quick calls print nothing). Logs,
CI and piped output never receive bar noise.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

#: Seconds an automatic bar waits before it appears (quick calls stay silent).
AUTO_DELAY = 0.5


def interactive() -> bool:
    """True in a Jupyter kernel or when stderr is a terminal."""
    try:
        from IPython import get_ipython

        if hasattr(get_ipython(), "kernel"):
            return True
    except ImportError:
        pass
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_enabled(progress: bool | None) -> bool:
    """Resolve a ``progress`` argument: explicit wins, then ``TLENS_ICL_PROGRESS``, then :func:`interactive`."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get("TLENS_ICL_PROGRESS")
    if env is not None and env.strip():
        return env.strip().lower() not in ("0", "false", "no", "off")
    return interactive()


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, enabled: bool | None = None,
                 desc: str = "") -> Any:
    """A ``tqdm.auto`` bar (widget in notebooks with ipywidgets, text otherwise) that clears itself when done."""
    with warnings.catch_warnings():  # tqdm.auto warns once when a notebook lacks ipywidgets; the text bar works
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    on = progress_enabled(enabled)
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not on,
                delay=AUTO_DELAY if enabled is None else 0.0, dynamic_ncols=True)


__all__ = ["AUTO_DELAY", "interactive", "progress_bar", "progress_enabled"]
