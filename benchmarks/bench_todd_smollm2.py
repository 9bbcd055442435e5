"""Benchmark: Todd et al.'s universal-head scan on SmolLM2-135M (30 layers x 9 heads = 270 heads).

``indirect_effect`` over 6 tasks, 100 clean prompts per task for the mean activations and 25 shuffled-label
prompts per task patched at every head (10-shot), end to end (prompt building, mean step, patching).
Prints wall and process CPU time, the route the engine took, and the time of one plain forward pass over
the same 25 x 6 corrupted prompts for scale.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/bench_todd_smollm2.py [--threads 2] [--folder DIR]

``--folder``: a converted SmolLM2 folder (safetensors + tokenizer); default ``load_model("smollm2-135m")``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

TASKS = ("capitalize", "present_past", "singular_plural", "country_capital", "choose_first_of_3", "first_letter")


def load(folder: str | None):
    import tlens_icl as ti

    if folder is None:
        return ti.load_model("smollm2-135m")
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(folder, device="cpu").eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--n-mean", type=int, default=100)
    ap.add_argument("--n-corrupted", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tlens_icl as ti

    model = load(args.folder)
    print(f"SmolLM2: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}", flush=True)
    pairs = [ti.make_prompt_pairs(model, t, n=args.n_corrupted, n_shots=10, seed=0) for t in TASKS]
    w0, c0 = time.perf_counter(), time.process_time()
    for p in pairs:
        ti.runs.query_logits(model, p.corrupted, batch_size=args.batch_size)
    fwd_wall, fwd_cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"one plain forward of the {len(TASKS)} x {args.n_corrupted} corrupted prompts: {fwd_wall:.1f} s wall, "
          f"{fwd_cpu:.1f} s CPU", flush=True)
    w0, c0 = time.perf_counter(), time.process_time()
    res = ti.indirect_effect(model, list(TASKS), n_mean=args.n_mean, n=args.n_corrupted, n_shots=10,
                             batch_size=args.batch_size)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"indirect_effect over {len(TASKS)} tasks (n_mean={args.n_mean}, n_corrupted={args.n_corrupted}): "
          f"{wall:.1f} s wall ({wall / 60:.2f} min), {cpu:.1f} s CPU; route {res.info.get('engine')}; "
          f"{cpu / fwd_cpu:.1f} x the plain forward's CPU time")
    print(res.summary())


if __name__ == "__main__":
    main()
