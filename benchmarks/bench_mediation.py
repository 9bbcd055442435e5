"""Benchmark: exact causal mediation (AIE over all heads), query-copy fast path vs one forward per head.

Builds a random GPT-2-small-sized model (12 layers x 12 heads, d_model 768; the test suite's word-level
tokenizer) and runs both exact methods on the same 10-shot prompts in one process, then attribution
patching. Prints timings, the speed-up and the largest difference between the two exact results.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_mediation.py [--n-corrupted 8] [--arch gpt2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # conftest's model builders

import torch  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="gpt2", choices=["native", "gpt2", "pythia", "llama", "gemma2"])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--n-mean", type=int, default=16)
    ap.add_argument("--n-corrupted", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from conftest import WORD_INPUTS as INPUTS, WORD_OUTPUTS_A as OUTPUTS_A, build_model, make_tokenizer

    import tlens_icl as ti
    from tlens_icl.analyses.causal.attribution import patching_fidelity
    from tlens_icl.engine import query as _engine
    from tlens_icl.engine.runs import query_logits

    model = build_model(args.arch, make_tokenizer(), n_layers=args.layers, d_model=args.d_model,
                        n_heads=args.heads, n_ctx=1024)
    task = ti.Task.from_pairs("toy_a", list(zip(INPUTS, OUTPUTS_A)), category="custom")
    pairs = ti.make_prompt_pairs(model, task, n=args.n_corrupted, n_shots=args.shots, template="qa")
    print(f"model: {args.arch}, {args.layers} layers x {args.heads} heads, d_model {args.d_model}, "
          f"vocabulary {model.cfg.d_vocab}; {len(pairs)} corrupted {args.shots}-shot prompts of "
          f"{pairs.corrupted.tokens.shape[1]} tokens; torch threads {torch.get_num_threads()}")

    kw = dict(n_mean=args.n_mean, n=args.n_corrupted, n_shots=args.shots, template="qa",
              batch_size=args.batch_size)
    one_forward = timed(lambda: query_logits(model, pairs.corrupted, batch_size=args.batch_size))[1]
    fast, t_fast = timed(lambda: ti.indirect_effect(model, task, method="fast", **kw))
    naive, t_naive = timed(lambda: ti.indirect_effect(model, task, method="naive", **kw))
    attr, t_attr = timed(lambda: ti.indirect_effect(model, task, method="attribution", **kw))

    # The patching step alone (shared work - mean activations, clean baseline - excluded).
    from tlens_icl.analyses.causal.patching import scorer

    _, score = scorer(model, "prob", pairs)
    values = fast.mean_z[0].expand(len(pairs), -1, -1, -1)
    cells = _engine.all_heads(model)
    base = pairs.corrupted
    patch = {m: timed(lambda m=m: _engine.patch_query_heads(model, base.tokens, base.query_pos, values, cells, score,
                                                            method=m, batch_size=args.batch_size))[1]
             for m in ("fast", "naive")}
    attr_only = timed(lambda: ti.attribution_patching(model, pairs, values=fast.mean_z[0],
                                                      batch_size=args.batch_size))[1]

    diff = float((fast.effects - naive.effects).abs().max())
    fid = patching_fidelity(attr, naive, k=10)
    print(f"one forward of the {len(pairs)} corrupted prompts: {one_forward:.2f} s")
    print(f"indirect_effect exact, fast path : {t_fast:7.2f} s   (patching step {patch['fast']:.2f} s)")
    print(f"indirect_effect exact, naive loop: {t_naive:7.2f} s   (patching step {patch['naive']:.2f} s, "
          f"{len(cells)} forwards)")
    print(f"speed-up: {t_naive / t_fast:.1f}x end to end, {patch['naive'] / patch['fast']:.1f}x patching step")
    print(f"max |AIE_fast - AIE_naive| per example: {diff:.3g}  (equal within 1e-5: {diff <= 1e-5})")
    print(f"attribution: {t_attr:.2f} s end to end, patching step {attr_only:.2f} s = "
          f"{attr_only / one_forward:.1f} forward-pass equivalents (naive: {len(cells)}, fast: "
          f"{patch['fast'] / one_forward:.1f})")
    print(f"attribution vs exact AIE: {fid}")


if __name__ == "__main__":
    main()
