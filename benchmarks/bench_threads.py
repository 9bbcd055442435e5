"""Torch intra-op threads: one thread vs torch's default, on the same calls in one process.

    HF_HUB_OFFLINE=1 python benchmarks/bench_threads.py [--repeats 3]

Workloads: the main job's mediation on the embedded model (``indirect_effect`` over the 6 bitwise tasks) and
one batched forward of a GPT-2-small-shaped random model (12 layers, d_model 768, 8 prompts x 75 tokens).
Each is timed with 1 thread and with the default, alternating, ``--repeats`` times; the median ratio is printed
(> 1: the default is slower). Run it with and without other load on the machine to see both regimes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def timed(fn, threads: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    default = torch.get_num_threads()
    import tlens_icl as ti
    from tlens_icl.models.loading import model_tasks
    from conftest import build_model, make_tokenizer

    model = ti.load_model("icl-tiny")
    bitwise = model_tasks(model, "bitwise")
    mediation = lambda: ti.indirect_effect(model, bitwise, n_mean=32, n=16, n_shots=8,  # noqa: E731
                                           progress=False)
    tok = make_tokenizer()
    big = build_model("gpt2", tok, n_layers=12, d_model=768, n_heads=12, n_ctx=256)
    tokens = torch.randint(4, len(tok), (8, 75))

    def forward() -> None:
        with torch.no_grad():
            big(tokens)

    print(f"cores {os.cpu_count()}, torch default threads {default}, load average {os.getloadavg()[0]:.1f}")
    for name, fn in (("icl-tiny mediation (6 tasks)", mediation), ("GPT-2-small forward (8 x 75)", forward)):
        fn()  # warm-up
        one, dflt = [], []
        for _ in range(args.repeats):
            one.append(timed(fn, 1))
            dflt.append(timed(fn, default))
        ratio = statistics.median(d / o for d, o in zip(dflt, one))
        print(f"{name}: 1 thread {statistics.median(one):.2f} s, {default} threads {statistics.median(dflt):.2f} s, "
              f"default / one = {ratio:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
