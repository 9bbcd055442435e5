"""The whole induction-vs-FV heads comparison on SmolLM2-135M (30 layers x 9 heads), timed per stage.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_heads.py            # full: 6 tasks, 6 k, 3 seeds
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_heads.py --small    # a quick pass, same shape
    ... bench_heads.py --ablation-methods naive auto   # the ablation stage twice in one process: every head set
                                                       # in full vs sharing each chunk's clean run (the default)

Stages: head scores (repeated random tokens), FV score (AIE, zero-shot corruption), representational
heads (concept RSA of head outputs), ablation with exclusion (FV, induction and 3 random seeds at every
k, few-shot accuracy with the heads ablated at the query - ``--positions all``: at every token - and the
token-loss score), overlap and depth. Ratios are against one plain (unablated)
few-shot evaluation of the same prompts, run in the same process; the head-score stage is also timed
against ``transformer_lens.head_detector.detect_head`` on the same sequences.
Uses ``load_model("smollm2-135m")`` when the library has that loader, else the scratch converter
(``/work/scratch/smollm2/load_smollm2.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import tlens_icl
from tlens_icl import head_ablation, head_scores, icl_accuracy, indirect_effect
from tlens_icl.analyses.heads.overlap import head_overlap
from tlens_icl.analyses.representations.activations import task_activations
from tlens_icl.analyses.representations.rsa import rsa

TASKS = ["capitalize", "choose_first_of_3", "present_past", "singular_plural", "country_capital", "first_letter"]


def load_smollm2():
    try:
        return tlens_icl.load_model("smollm2-135m")
    except Exception:  # noqa: BLE001 - the library loader has not landed: use the scratch converter
        sys.path.insert(0, "/work/scratch/smollm2")
        import load_smollm2 as L

        return L.load_smollm2()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true")
    p.add_argument("--out", default="outputs/bench_heads")
    p.add_argument("--positions", default="query", choices=["query", "all"],
                   help="where heads are ablated for accuracy (the loss score always ablates every token)")
    p.add_argument("--ablation-methods", nargs="+", default=["auto"], choices=["auto", "naive"],
                   help="head_ablation(method=...) runs, timed one after another in this process")
    a = p.parse_args()
    torch.set_num_threads(1)
    size = dict(n=6, n_mean=8, n_corrupted=6, loss_n=4, loss_length=96, n_random_seq=8) if a.small else \
        dict(n=24, n_mean=16, n_corrupted=8, loss_n=8, loss_length=96, n_random_seq=16)
    ks, shots, seeds, exclude = (0, 2, 5, 10, 20, 40), 5, 3, 0.02
    t_all = time.perf_counter()
    model = load_smollm2()
    print(f"loaded in {time.perf_counter() - t_all:.1f} s; {model.cfg.n_layers} x {model.cfg.n_heads} heads; size {size}")
    times: dict[str, float] = {}

    def stage(name, fn):
        t = time.perf_counter()
        r = fn()
        times[name] = time.perf_counter() - t
        print(f"[{name}] {times[name]:.1f} s  {r.summary() if hasattr(r, 'summary') else ''}", flush=True)
        return r

    base = stage("baseline: one few-shot evaluation", lambda: icl_accuracy(model, TASKS, shots=(shots,), n=size["n"]))
    hs = stage("head scores", lambda: head_scores(model, n=size["n_random_seq"], length=25))
    from transformer_lens.head_detector import detect_head

    texts = [model.tokenizer.decode(r[1:]) for r in hs.tokens[:4]]
    t = time.perf_counter()
    detect_head(model, texts, "induction_head")
    t_det = time.perf_counter() - t
    t = time.perf_counter()
    head_scores(model, hs.tokens[:4])
    t_ours = time.perf_counter() - t
    print(f"head scores of 4 sequences: ours {t_ours:.2f} s vs head_detector {t_det:.2f} s (x{t_det / t_ours:.1f})")
    aie = stage("FV score (AIE)", lambda: indirect_effect(model, TASKS, n_mean=size["n_mean"], n=size["n_corrupted"],
                                                          n_shots=shots, corruption="zero_shot"))
    rs = stage("RSA heads", lambda: rsa(task_activations(model, TASKS, shots=(shots,), n=size["n"], sites=["head_out"]),
                                        site="head_out", n_permutations=0))
    abs_ = {}
    for method in a.ablation_methods:
        ab = abs_[method] = stage(f"ablation with exclusion ({method})", lambda: head_ablation(
            model, TASKS, {"FV": aie, "induction": hs}, ks=ks, exclude=exclude, n_random=seeds, n=size["n"],
            n_shots=shots, loss_n=size["loss_n"], loss_length=size["loss_length"], method=method,
            positions=a.positions))
    if len(abs_) == 2:
        x, y = abs_["naive"], abs_["auto"]
        print(f"naive vs auto: accuracy cells differing {int(((x.correct - y.correct).abs() > 0).sum())} of "
              f"{int((~x.correct.isnan()).sum())}; max |loss score diff| {float((x.loss - y.loss).abs().nan_to_num(0).max()):.2e}")
    ov = stage("overlap", lambda: head_overlap({"FV": aie, "induction": hs, "RSA": rs.head_scores()}, ks=(5, 10, 20, 40),
                                               k_depth=10, model=model))
    total = time.perf_counter() - t_all
    print(f"\nbaseline accuracy {float(base.accuracy().mean()):.3f}")
    print("top induction:", ", ".join(f"{h}={float(hs.induction()[h]):.2f}" for h in hs.top_heads(10, "induction")))
    print("top FV (AIE):", ", ".join(f"{h}={float(aie.mean()[h]):.4f}" for h in aie.top_heads(10)))
    print(ov.to_dataframe().to_string(index=False))
    print(ov.depth_table().drop(columns=["heads"]).to_string(index=False))
    print(ab.to_dataframe().drop(columns=["heads"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    b = times["baseline: one few-shot evaluation"]
    print("\n| stage | s | x one evaluation |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v:.1f} | {v / b:.1f} |")
    extra = sum(times[f"ablation with exclusion ({m})"] for m in a.ablation_methods[:-1])
    print(f"| whole comparison (incl. loading; one ablation run, the last) | {total - extra:.1f} | {(total - extra) / b:.1f} |")
    out = Path(a.out)
    for name, r in (("head_scores", hs), ("aie", aie), ("ablation", ab), ("overlap", ov)):
        r.export(out / name, name)


if __name__ == "__main__":
    main()
