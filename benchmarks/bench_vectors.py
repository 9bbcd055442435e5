"""Cost and accuracy of each task-vector method under the one protocol (``compare_methods``) on icl-tiny.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_vectors.py

Each method runs alone (baselines included in every run), so the time is that method's fitting (vector
extraction, mediation for the FV, layer/strength selection, soft-injection training) plus evaluation.
"""

from __future__ import annotations

import time

import torch

import tlens_icl
from tlens_icl import compare_methods
from tlens_icl.workflows.compare import METHODS

torch.set_num_threads(1)


def main() -> None:
    model = tlens_icl.load_model("icl-tiny")
    card = next(m for m in tlens_icl.list_models() if m["name"] == "icl-tiny")
    word, bitwise = card["families"]["word"], card["families"]["bitwise"]
    tasks = word + bitwise
    corruption = {t: "zero_shot" for t in word} | {t: "shuffled_labels" for t in bitwise}
    kw = dict(n=64, n_fit=32, n_shots=8, seed=0, fv_corruption=corruption, soft_steps=100)
    t0 = time.perf_counter()
    compare_methods(model, tasks, methods=[], **kw)
    base = time.perf_counter() - t0
    print(f"{len(tasks)} tasks, n=64, n_fit=32, 8 shots; baselines only: {base:.1f} s")
    print("| method | time (s, incl. baselines) | mean accuracy | mean P(answer) |")
    print("|---|---|---|---|")
    for m in METHODS:
        t0 = time.perf_counter()
        res = compare_methods(model, tasks, methods=[m], **kw)
        dt = time.perf_counter() - t0
        acc, p = res.table().loc[m, "mean"], res.table(metric="prob").loc[m, "mean"]
        print(f"| {m} | {dt:.1f} | {acc:.3f} | {p:.3f} |")
    acc, p = res.table(), res.table(metric="prob")
    for b in ("zero_shot", "icl"):
        print(f"| {b} (baseline) | - | {acc.loc[b, 'mean']:.3f} | {p.loc[b, 'mean']:.3f} |")


if __name__ == "__main__":
    main()
