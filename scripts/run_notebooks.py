"""Execute the notebooks in place so they are committed with their outputs (figures visible on GitHub).

    HF_HUB_OFFLINE=1 python scripts/run_notebooks.py [notebooks/02_causal_mediation.ipynb ...]

Each notebook runs top to bottom in a fresh kernel in a temporary folder (tests/test_notebooks.py re-executes
them the same way). Transient output is dropped before saving: progress-bar frames (they are cleared when a
call ends; in a saved file they would be hundreds of lines) and tqdm's note that ipywidgets is not installed.
Everything a cell prints or displays is kept.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
#: a progress-bar frame: "desc:  42%|####      | 5/12 [00:01<00:02, 3.1it/s]", or the blank line that clears it
BAR = re.compile(r"^(\S.*: )?\s*\d+%\|.*\|\s*\d+/\d+ \[.*\]\s*$|^\s*$")
TQDM_NOTE = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm as notebook_tqdm")


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # nested bars move the cursor


def transient(text: str) -> bool:
    lines = [x for part in ANSI.sub("", text).split("\n") for x in part.split("\r")]
    return all(BAR.match(x) or any(n in x for n in TQDM_NOTE) for x in lines)


def clean(nb: nbformat.NotebookNode) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [o for o in cell.outputs
                        if not (o.output_type == "stream" and o.name == "stderr" and transient(o.text))]


def run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    clean(nb)
    nbformat.write(nb, path)
    print(f"{path.name}: {time.time() - t0:.0f} s, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    for p in [Path(a) for a in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb")):
        run(p)
