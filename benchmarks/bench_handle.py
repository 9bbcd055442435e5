"""Benchmark: what resolving a model into its ModelHandle costs, against the forward passes it serves.

An analysis resolves its model once (``tlens_icl.models.adapter.handle``); an engine entry point called with a
plain model resolves it on the way in (``@resolved``). This times, in one process on a GPT-2-small-shaped bridge
(12 layers x 12 heads, d_model 768, the test suite's BPE tokenizer): one resolution, ``query_logits`` of a batch
given the model (a resolution per call) and given a handle (none), and prints the resolution's share.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_handle.py [--batch 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # conftest's model builders

import torch  # noqa: E402


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from conftest import build_model, make_bpe_tokenizer

    import tlens_icl as ti
    from tlens_icl.engine.runs import query_logits
    from tlens_icl.models.adapter import handle

    tok = make_bpe_tokenizer()
    model = build_model("gpt2", tok, n_layers=12, d_model=768, n_heads=12)
    task = ti.Task.from_pairs("animals", [(w, w.upper()) for w in ["cat", "dog", "owl", "fox", "bee", "ant", "yak",
                                                                    "eel", "bat", "ox", "gnu", "emu"]])
    batch = ti.make_prompts(model, task, n=args.batch, n_shots=5, seed=0)
    h = handle(model)
    query_logits(h, batch)  # warm-up (the logit-cut proof runs once per model)
    n = 200
    resolve = best(lambda: [handle(model) for _ in range(n)], args.rounds) / n
    pairs = [(best(lambda: query_logits(model, batch), 1), best(lambda: query_logits(h, batch), 1))
             for _ in range(args.rounds)]  # interleaved: the machine's load drifts alike for both
    with_model = statistics.median(p[0] for p in pairs)
    with_handle = statistics.median(p[1] for p in pairs)
    assert torch.equal(query_logits(model, batch), query_logits(h, batch))
    print(f"model 12x12 d768, batch {args.batch}, {batch.tokens.shape[1]} tokens, median of {args.rounds} rounds "
          "(process CPU time)")
    print(f"one resolution (handle(model)):        {resolve * 1e6:9.1f} us")
    print(f"query_logits given the model:          {with_model * 1e3:9.2f} ms")
    print(f"query_logits given its handle:         {with_handle * 1e3:9.2f} ms")
    print(f"resolution / query_logits:             {resolve / with_handle:9.5f}  (given the model / given the handle: "
          f"{with_model / with_handle:.3f}x)")


if __name__ == "__main__":
    main()
