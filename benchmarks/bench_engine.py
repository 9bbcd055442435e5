"""Benchmark: the query-intervention engine against (a) one forward per cell, (b) transformer_lens.patching,
(c) the previous fast path, on random GPT-2-shaped bridges; the FV layer sweep; activation patching.

Times are **process CPU seconds** (``time.process_time``; the machine's cores are shared, so wall time is
noise) with one torch thread, as the **median of interleaved rounds** (every method once per round).
Ratios are taken within one configuration and round set. The grid is sampled (see ``GRID``); for the
one-forward-per-cell loop and TransformerLens, ``--sample`` cells (one head per layer) are timed and the
per-cell cost is extrapolated to every head (each cell is one identical forward). Exactness is checked on
the sampled cells.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_engine.py [--part heads|fv|patch|all] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens patching shows a progress bar
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # conftest's model builders
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

SHAPES = {"4x8": dict(n_layers=4, n_heads=8, d_model=256), "12x12": dict(n_layers=12, n_heads=12, d_model=768),
          "24x16": dict(n_layers=24, n_heads=16, d_model=1024)}
#: (shape, batch, T) - the grid of the issue, sampled: the 24x16 model and T=400 only at batch 1, plus the bar's T=75.
GRID = [("4x8", 1, 40), ("4x8", 8, 40), ("4x8", 1, 120), ("4x8", 8, 120), ("4x8", 1, 400), ("4x8", 8, 400),
        ("12x12", 1, 40), ("12x12", 8, 40), ("12x12", 8, 75), ("12x12", 1, 120), ("12x12", 8, 120), ("12x12", 1, 400),
        ("24x16", 1, 40), ("24x16", 1, 120)]
CLOCK = time.process_time


def timed(fn):
    t = CLOCK()
    out = fn()
    return out, CLOCK() - t


def rounds(methods: dict, n: int) -> dict:
    """Every method once per round, ``n`` rounds; median time and the last output of each."""
    times = {k: [] for k in methods}
    outs = {}
    for _ in range(n):
        for name, fn in methods.items():
            outs[name], t = timed(fn)
            times[name].append(t)
    return {k: (outs[k], statistics.median(v)) for k, v in times.items()}


def model_of(shape: str, vocab: int = 1000, n_ctx: int = 1024):
    from conftest import build_model, make_tokenizer

    words = [f"w{i}" for i in range(vocab - 4)]
    return build_model("gpt2", make_tokenizer(words), n_ctx=n_ctx, **SHAPES[shape])


def bench_heads(args) -> None:
    import pandas as pd
    import transformer_lens.patching as tlp

    import previous_fast_path
    from tlens_icl.engine import query as Q
    from tlens_icl.engine.capture import query_z

    print("\n## per-head patching at the query: the patching step (all heads; metric P(answer); values = the clean "
          "run's z at the query, computed once beforehand and shared by every method, like TL's clean cache)")
    print("| model | batch | T | one fwd (s) | engine (s) | engine fwd-eq | vs loop | vs TL patching | vs previous fast path "
          "| route | max abs diff vs loop | vs TL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    grid = [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2])) for c in args.configs] if args.configs else GRID
    for shape, b, T in grid:
        if args.only and shape not in args.only:
            continue
        model = model_of(shape)
        g = torch.Generator().manual_seed(0)
        clean = torch.randint(4, model.cfg.d_vocab, (b, T), generator=g)
        clean[:, 0] = 1
        corrupted = clean.clone()
        corrupted[:, 1:-1] = torch.randint(4, model.cfg.d_vocab, (b, T - 2), generator=g)
        q = torch.full((b,), T - 1)
        answer = torch.randint(4, model.cfg.d_vocab, (b,), generator=g)
        rows = torch.arange(b)
        score = lambda lg, r: lg.float().softmax(-1)[torch.arange(len(r)), answer[r].to(lg.device)]  # noqa: E731
        cells = Q.all_heads(model)
        L, H = model.cfg.n_layers, model.cfg.n_heads
        sample = [Q.Head(layer, (layer * 5) % H) for layer in range(L)][: args.sample or L]

        values, _ = query_z(model, clean, q, batch_size=8)  # the clean run's z at the query: shared, not timed
        with torch.no_grad():
            _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))  # TL's input

        def engine():
            return Q.patch_query_heads(model, corrupted, q, values, cells, score, batch_size=8)

        def loop_sample():
            return Q.patch_query_heads(model, corrupted, q, values, sample, score, method="naive", batch_size=8)

        def previous():
            return previous_fast_path.patch_heads(model, corrupted, q, values, cells, score, batch_size=8)

        df = pd.DataFrame([(c.layer, T - 1, c.head) for c in sample], columns=["layer", "pos", "head"])

        def tl_sample():
            with torch.no_grad():
                metric = lambda lg: lg[rows, q].softmax(-1)[rows, answer].mean()  # noqa: E731
                return tlp.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric, index_axis_names=None,
                                                               index_df=df)

        def forward():
            with torch.inference_mode():
                return model(corrupted)

        big = shape == "24x16" or T >= 400
        res = rounds({"fwd": forward, "engine": engine, "loop": loop_sample, "tl": tl_sample, "prev": previous},
                     1 if big else args.rounds)
        t_fwd = res["fwd"][1]
        (eff, base, route), t_eng = res["engine"]
        (eff_s, _, _), t_loop_s = res["loop"]
        k = len(sample)
        t_loop = t_fwd + len(cells) * (t_loop_s - t_fwd) / k  # the unpatched run + one forward per head
        t_tl = len(cells) * res["tl"][1] / k  # one forward per head
        t_prev = res["prev"][1]
        idx = [cells.index(c) for c in sample]
        diff = float((eff[idx] - eff_s).abs().max())
        tl_diff = float(((eff[idx] + base).mean(-1) - res["tl"][0].flatten()).abs().max())
        print(f"| {shape} | {b} | {T} | {t_fwd:.3f} | {t_eng:.2f} | {t_eng / t_fwd:.2f} | {t_loop / t_eng:.1f}x | "
              f"{t_tl / t_eng:.1f}x | {t_prev / t_eng:.2f}x | {route} | {diff:.1e} | {tl_diff:.1e} |", flush=True)


def bench_fv(args) -> None:
    from tlens_icl.engine import query as Q

    print("\n## function-vector layer sweep: add v after every block at the query (12x12, batch 8, T = 75)")
    model = model_of("12x12")
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(4, model.cfg.d_vocab, (8, 75), generator=g)
    lengths = torch.tensor([75, 70, 72, 75, 68, 74, 71, 73])  # right-padded rows of different lengths
    for i, n in enumerate(lengths):
        toks[i, n:] = 0
    q = lengths - 1
    vec = 4 * torch.randn(model.cfg.d_model, generator=g)
    layers = list(range(model.cfg.n_layers))
    reduce = lambda lg, r: lg.float().log_softmax(-1)  # noqa: E731

    def forward():
        with torch.inference_mode():
            return model(toks)

    res = rounds({
        "fwd": forward,
        "engine": lambda: Q.query_interventions(model, toks, q, Q.resid_edits(layers, vec), reduce),
        "loop": lambda: Q.query_interventions(model, toks, q, Q.resid_edits(layers, vec), reduce, method="naive"),
    }, args.rounds)
    t_fwd = res["fwd"][1]
    eng, loop = res["engine"][0], res["loop"][0]
    print(f"one forward {t_fwd:.3f} s; engine ({eng.method}) {res['engine'][1]:.2f} s = "
          f"{res['engine'][1] / t_fwd:.2f} forward-equivalents (base run included); loop {res['loop'][1]:.2f} s = "
          f"{res['loop'][1] / t_fwd:.1f} fwd-eq; speed-up {res['loop'][1] / res['engine'][1]:.1f}x; "
          f"max |log-prob diff| {float((eng.values - loop.values).abs().max()):.1e} "
          f"(effects up to {float((loop.values - loop.baseline).abs().max()):.2f})", flush=True)


def bench_patch(args) -> None:
    import pandas as pd
    import transformer_lens.patching as tlp

    import tlens_icl as ti
    from conftest import WORD_INPUTS as INPUTS, WORD_OUTPUTS_A as OUTPUTS_A, build_model, make_tokenizer
    from tlens_icl.engine import positions as P

    print("\n## activation patching, resid_pre, every layer x position (5-shot shuffled-label pairs, batch 8)")
    print("| model | T | TL patching (s) | engine (s) | speed-up | forwards run / cells | route | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    task = ti.Task.from_pairs("toy_a", list(zip(INPUTS, OUTPUTS_A)), category="custom")
    for shape in ("4x8", "12x12"):
        if args.only and shape not in args.only:
            continue
        model = build_model("gpt2", make_tokenizer(), n_ctx=1024, **SHAPES[shape])
        pairs = ti.make_prompt_pairs(model, task, n=8, n_shots=5, template="qa")
        clean, corr = pairs.clean.tokens, pairs.corrupted.tokens
        q = pairs.corrupted.query_pos
        rows = torch.arange(len(q))
        ans = pairs.clean.answer_tokens
        L, T = model.cfg.n_layers, clean.shape[1]
        layers = list(range(L)) if shape == "4x8" else [0, L // 2, L - 1]  # TL sampled by layer on 12x12
        df = pd.DataFrame([(layer, p) for layer in layers for p in range(T)], columns=["layer", "pos"])

        def tl():
            with torch.no_grad():
                _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
                metric = lambda lg: lg[rows, q].log_softmax(-1)[rows, ans].mean()  # noqa: E731
                return tlp.get_act_patch_resid_pre(model, corr, cache, metric, index_axis_names=None, index_df=df)

        def forward():
            with torch.inference_mode():
                return model(corr)

        engine = lambda: P.patch_layer_positions(model, corr, clean, q, "resid_pre",  # noqa: E731
                                                 lambda lg, r: lg.log_softmax(-1)[torch.arange(len(r)), ans[r]],
                                                 batch_size=8)
        res = rounds({"fwd": forward, "tl": tl, "engine": engine}, 1 if shape == "12x12" else args.rounds)
        t_fwd, t_tl_s = res["fwd"][1], res["tl"][1]
        t_tl = t_fwd + (t_tl_s - t_fwd) * L / len(layers)
        run, t_eng = res["engine"]
        ours = (run.effects + run.base_score).mean(-1)[layers]
        diff = float((ours.flatten() - res["tl"][0].flatten()).abs().max())
        print(f"| {shape} | {T} | {t_tl:.1f}{' (3 of 12 layers, scaled)' if len(layers) < L else ''} | {t_eng:.1f} | "
              f"{t_tl / t_eng:.1f}x | {run.forwards} / {L * T} | {run.method} | {diff:.1e} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="all", choices=["heads", "fv", "patch", "all"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sample", type=int, default=0, help="cells timed for the loop/TL (default: one head per layer)")
    ap.add_argument("--only", nargs="*", help="model shapes to run (default: all)")
    ap.add_argument("--configs", nargs="*", help="heads grid entries as shape:batch:T (default: GRID)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import platform
    from importlib.metadata import version

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"transformer-lens {version('transformer-lens')}; clock: process CPU time, median of "
          f"{args.rounds} interleaved rounds (1 for the 24x16 model, T=400 and 12x12 patching)")
    if args.part in ("heads", "all"):
        bench_heads(args)
    if args.part in ("fv", "all"):
        bench_fv(args)
    if args.part in ("patch", "all"):
        bench_patch(args)


if __name__ == "__main__":
    main()
