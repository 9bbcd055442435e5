"""Big models: one analysis on one device vs split over several (accelerate ``device_map``) vs vLLM.

Runs on a GPU machine (no network needed)::

    HF_HUB_OFFLINE=1 python benchmarks/bench_devices.py                       # random Llama, 1.2B shape, all GPUs
    HF_HUB_OFFLINE=1 python benchmarks/bench_devices.py --model /path/to/hf-folder --dtype bfloat16
    HF_HUB_OFFLINE=1 python benchmarks/bench_devices.py --smoke               # CPU: tiny model, CPU/disk offload

What it measures, in one process (ratios against the single-device run, so machine load cancels):

1. ``single``: the model on ``cuda:0`` (skipped when it does not fit; ``--smoke``: the CPU).
2. ``split``: the same checkpoint loaded with ``load_model(path, n_devices=N)`` (``--smoke``: an all-CPU/disk
   ``device_map`` with ``offload_folder``, the same accelerate hooks). The results must equal ``single``
   (bit for bit on one device type; the script prints the largest difference).
3. ``vllm``: ``RemoteBridge.boot_vllm(path, tensor_parallel_size=N, enable_position_interventions=True)`` where
   vLLM is installed: residual capture (``task_activations``) and a function-vector layer sweep, compared with
   the local model (vLLM's kernels differ, so agreement is to within bf16/fp16 rounding, printed).

The analyses: ``icl_accuracy``, ``indirect_effect`` (all heads, fast exact path, ``batch_size`` rows),
``task_activations`` (``resid_post``) and ``function_vector_sweep``, each on synthetic word tasks (a random model
has nothing to learn in context, so only the cost and the agreement are meaningful, not the accuracies).
A random checkpoint is written once (``--config``: ``llama-1b`` about 1.2B parameters, ``llama-8b`` the
Llama-3-8B shape) so no download is needed. Prints a markdown table for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # conftest's word-level tokenizer

import torch  # noqa: E402

import tlens_icl as ti  # noqa: E402
from tlens_icl.analyses.vectors.function_vectors import function_vector_sweep  # noqa: E402

CONFIGS = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8),
}
WORDS = [f"w{i}" for i in range(400)]


def write_checkpoint(config: str, folder: Path, dtype: torch.dtype) -> Path:
    """A random Llama of shape ``config`` with a word-level tokenizer, saved with ``save_pretrained``."""
    from conftest import EXTRA, make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(WORDS + EXTRA)
    vocab = tok.get_vocab()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0, **CONFIGS[config])
    model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tasks() -> list[Any]:
    half = len(WORDS) // 2
    return [ti.Task.from_pairs(f"map{k}", [(WORDS[i], WORDS[half + (i * (k + 1)) % half]) for i in range(half)])
            for k in range(2)]


def run_analyses(model: Any, args: argparse.Namespace, *, local: bool = True) -> dict[str, Any]:
    """Time each analysis; returns ``{name: (seconds, result tensor)}``."""
    out: dict[str, Any] = {}
    kw = dict(n_shots=args.shots, seed=0)

    def timed(name: str, fn: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out[name] = (time.perf_counter() - t0, value)
        print(f"    {name}: {out[name][0]:.2f} s", flush=True)

    ts = tasks()
    timed("icl_accuracy", lambda: ti.icl_accuracy(model, ts, shots=[0, args.shots], n=args.n,
                                                  batch_size=args.batch_size).answer_prob)
    timed("task_activations", lambda: ti.task_activations(model, ts, shots=(args.shots,), n=args.n,
                                                          batch_size=args.batch_size).resid_post)
    fv = torch.ones(model.cfg.d_model) * 0.1
    timed("function_vector_sweep", lambda: function_vector_sweep(
        model, fv, ts[0], layers=list(range(0, model.cfg.n_layers, max(1, model.cfg.n_layers // 4))),
        settings=("zero_shot",), n=args.n, batch_size=args.batch_size, **kw).answer_prob)
    if local:
        timed("indirect_effect", lambda: ti.indirect_effect(model, ts[0], n_mean=args.n, n=args.n,
                                                            batch_size=args.batch_size, **kw).effects)
    return out


def free(model: Any) -> None:
    close = getattr(model, "close", None)
    if callable(close):
        close()
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a local save_pretrained folder (default: a random checkpoint)")
    p.add_argument("--config", default="llama-1b", choices=sorted(CONFIGS), help="shape of the random checkpoint")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--devices", type=int, default=None, help="GPUs to split over (default: all visible)")
    p.add_argument("--n", type=int, default=16, help="prompts per task")
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--smoke", action="store_true", help="CPU only: a tiny model split over CPU and disk")
    p.add_argument("--no-vllm", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.smoke:
        args.config, args.dtype, args.n, args.batch_size = "tiny", "float32", 4, 2
    dtype = getattr(torch, args.dtype)
    gpus = torch.cuda.device_count()
    if not args.smoke and gpus == 0:
        raise SystemExit("No GPU: run with --smoke for the CPU check (tiny model, CPU/disk offload).")
    n_dev = args.devices or max(gpus, 1)
    work = Path(tempfile.mkdtemp(prefix="bench_devices_"))
    path = Path(args.model) if args.model else write_checkpoint(args.config, work / "ckpt", dtype)
    print(f"checkpoint {path} ({args.config if not args.model else 'given'}), dtype {args.dtype}, "
          f"{gpus} GPU(s): {[torch.cuda.get_device_name(i) for i in range(gpus)]}", flush=True)

    runs: dict[str, dict[str, Any]] = {}
    print("single device:", flush=True)
    try:
        model = ti.load_model(str(path), dtype=dtype, device="cpu" if args.smoke else "cuda:0")
        runs["single"] = run_analyses(model, args)
        free(model)
    except torch.OutOfMemoryError:
        print("    does not fit on one GPU: skipped", flush=True)
    split_kw: dict[str, Any]
    if args.smoke:
        n_layers = CONFIGS["tiny"]["num_hidden_layers"]
        dmap = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "disk", "lm_head": "disk"}
        dmap |= {f"model.layers.{i}": "cpu" if i % 2 == 0 else "disk" for i in range(n_layers)}
        split_kw = dict(device_map=dmap, offload_folder=str(work / "offload"))
    else:
        split_kw = dict(n_devices=n_dev) if n_dev > 1 else dict(device_map="auto")
    print(f"split ({split_kw if not args.smoke else 'CPU + disk offload'}):", flush=True)
    model = ti.load_model(str(path), dtype=dtype, **split_kw)
    print(f"    placement: {sorted(set(map(str, model.original_model.hf_device_map.values())))}", flush=True)
    runs["split"] = run_analyses(model, args)
    free(model)

    if not args.no_vllm and not args.smoke:
        try:
            import vllm  # noqa: F401
            from transformer_lens.model_bridge import RemoteBridge
        except ImportError:
            print("vllm: not installed here, skipped", flush=True)
        else:
            print(f"vllm (tensor_parallel_size={n_dev}):", flush=True)
            bridge = RemoteBridge.boot_vllm(str(path), dtype=dtype, tensor_parallel_size=n_dev,
                                            enable_position_interventions=True, max_model_len=1024,
                                            gpu_memory_utilization=0.6)
            runs["vllm"] = run_analyses(bridge, args, local=False)
            free(bridge)

    ref_name = "single" if "single" in runs else "split"
    ref = runs[ref_name]
    print(f"\n| analysis | {' | '.join(f'{k} (s)' for k in runs)} | {' | '.join(f'{k} / {ref_name}' for k in runs if k != ref_name)} "
          f"| max abs diff vs {ref_name} |")
    print("|---" * (1 + 2 * len(runs)) + "|")
    for name, (t_ref, v_ref) in ref.items():
        times = " | ".join(f"{runs[k][name][0]:.2f}" if name in runs[k] else "-" for k in runs)
        ratios = " | ".join(f"{runs[k][name][0] / t_ref:.2f}" if name in runs[k] else "-" for k in runs if k != ref_name)
        diffs = ", ".join(f"{k}: {float((runs[k][name][1].float() - v_ref.float()).abs().nan_to_num().max()):.2g}"
                          for k in runs if k != ref_name and name in runs[k])
        print(f"| {name} | {times} | {ratios} | {diffs or '-'} |")


if __name__ == "__main__":
    main()
