"""Benchmark: Todd et al.'s universal-head scan on a named model, beside one plain forward of the prompts it runs.

``indirect_effect`` over 6 tasks, 100 clean prompts per task for the mean activations and 25 shuffled-label
corrupted prompts per task patched at every head (10-shot), end to end. In the same process, as the scale:
one plain forward (``model(tokens)``, every position unembedded, rows chunked by length as the engine
chunks them) of exactly the prompts the method must run - the 6 x 100 mean prompts, the 6 x 25 clean and
the 6 x 25 corrupted prompts (the corrupted ones timed on their own too) - before the scan (and after it
with ``--plain-after``: the scale is then their mean), and (``--stopped``) the same forwards stopped before
the unembedding (the cheapest forward there is). ``--scan-only``: the scan alone (e.g. an older checkout's,
to set beside another run's forwards). Prints time (wall and process
CPU) and peak memory (RSS high-water mark, reset before each phase; "extra" is above the RSS after loading)
per phase, the ratios, and the issue's aim: scan <= 1.3 x the plain forwards + <= 2 forward-equivalents (of
the corrupted prompts) for patching every head.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_todd_models.py smollm2-135m --threads 1
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_todd_models.py ~/.cache/tlens_icl/gemma-3-270m

MODEL: a name for ``tlens_icl.load_model`` or a converted model folder. ``--json FILE`` writes the numbers.
``TLENS_ICL_FULL_LOGITS=1`` runs the engine as before logits were cut to the rows read (every position
unembedded, the row planner counting logits everywhere). Works on older tlens_icl checkouts too (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

TASKS = ("capitalize", "present_past", "singular_plural", "country_capital", "choose_first_of_3", "first_letter")


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


@contextmanager
def phase(name: str, rows: dict[str, dict[str, float]], base_rss: int) -> Any:
    """Time (wall, process CPU) and peak RSS of the block, stored under ``rows[name]``."""
    with open("/proc/self/clear_refs", "w") as f:  # reset the RSS high-water mark (VmHWM) to the current RSS
        f.write("5")
    w0, c0 = time.perf_counter(), time.process_time()
    yield
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = rss_kib("VmHWM")
    rows[name] = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak / 1024, "extra_rss_mib": (peak - base_rss) / 1024,
                  "load": os.getloadavg()[0]}
    print(f"{name:58s} {wall:8.1f} s wall {cpu:8.1f} s CPU  peak RSS {peak / 1024:7.0f} MiB "
          f"(+{(peak - base_rss) / 1024:6.0f})  load {os.getloadavg()[0]:.1f}", flush=True)


def plain_forwards(model: Any, batches: list[Any], batch_size: int, *, unembed: bool) -> list[tuple[float, float]]:
    """One forward of every row of ``batches`` in length-sorted chunks cut after each chunk's longest prompt;
    ``unembed=False`` stops each forward at the final norm (no logits). Returns (wall, CPU) per batch."""
    from tlens_icl.engine import hooks
    from tlens_icl.engine.runs import length_chunks

    class Stop(Exception):
        pass

    def stop(act: Any, hook: Any) -> None:
        raise Stop

    times = []
    for b in batches:
        w0, c0 = time.perf_counter(), time.process_time()
        last = b.attention_mask.sum(1) - 1
        for rows, width in length_chunks(last, batch_size):
            with torch.inference_mode():
                if unembed:
                    model(b.tokens[rows, :width])
                    continue
                with model.hooks(fwd_hooks=[(hooks.final_norm(), stop)]):
                    try:
                        model(b.tokens[rows, :width])
                    except Stop:
                        pass
        times.append((time.perf_counter() - w0, time.process_time() - c0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a load_model name (smollm2-135m) or a converted model folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-mean", type=int, default=100)
    ap.add_argument("--n-corrupted", type=int, default=25)
    ap.add_argument("--n-shots", type=int, default=10)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plain-after", action="store_true", help="time the plain forwards again after the scan")
    ap.add_argument("--stopped", action="store_true", help="also time the forwards stopped before the unembedding")
    ap.add_argument("--scan-only", action="store_true", help="time the scan alone (no plain forwards)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tlens_icl as ti
    from tlens_icl.prompts.spec import stream_seed
    from tlens_icl.engine import query

    tasks = args.tasks.split(",")
    rows: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    model = ti.load_model(os.path.expanduser(args.model))
    cfg = model.cfg
    print(f"{args.model}: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, vocabulary {cfg.d_vocab}, "
          f"loaded in {time.perf_counter() - t0:.0f} s; tlens_icl {ti.__file__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); TLENS_ICL_FULL_LOGITS={os.environ.get('TLENS_ICL_FULL_LOGITS', '')!r}",
          flush=True)
    # exactly the prompts indirect_effect builds (same seeds and defaults)
    mean = [ti.make_prompts(model, t, n=args.n_mean, n_shots=args.n_shots, seed=stream_seed(0, "mean")) for t in tasks]
    pairs = [ti.make_prompt_pairs(model, t, n=args.n_corrupted, n_shots=args.n_shots, seed=0) for t in tasks]
    clean, corrupted = [p.clean for p in pairs], [p.corrupted for p in pairs]
    every = mean + clean + corrupted
    n_prompts = sum(len(b) for b in every)
    tokens = sum(int(b.attention_mask.sum()) for b in every)
    print(f"{len(tasks)} tasks: {n_prompts} prompts ({tokens} tokens, mean {tokens / n_prompts:.0f}) = "
          f"{len(tasks)} x ({args.n_mean} mean + {args.n_corrupted} clean + {args.n_corrupted} corrupted)", flush=True)
    base_rss = rss_kib("VmRSS")
    print(f"RSS with the model loaded and the prompts built: {base_rss / 1024:.0f} MiB", flush=True)

    patch_time = [0.0, 0.0]
    original = query.patch_query_heads

    def timed(*a: Any, **kw: Any) -> Any:  # the patching step (corrupted base run + every head's copies)
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return original(*a, **kw)
        finally:
            patch_time[0] += time.perf_counter() - w0
            patch_time[1] += time.process_time() - c0

    bs = args.batch_size
    if not args.scan_only:
        with phase("plain forward, all prompts (before the scan)", rows, base_rss):
            times = plain_forwards(model, every, bs, unembed=True)
        part = times[len(mean) + len(clean):]
        sub = {"wall_s": sum(t[0] for t in part), "cpu_s": sum(t[1] for t in part)}
        rows["plain forward, corrupted prompts only"] = sub
        print(f"{'  of which the corrupted prompts':58s} {sub['wall_s']:8.1f} s wall {sub['cpu_s']:8.1f} s CPU", flush=True)
    if args.stopped:
        with phase("forward stopped before the unembedding, all prompts", rows, base_rss):
            plain_forwards(model, every, bs, unembed=False)
    query.patch_query_heads = timed
    try:
        with phase("whole scan (indirect_effect)", rows, base_rss):
            res = ti.indirect_effect(model, tasks, n_mean=args.n_mean, n=args.n_corrupted,
                                     n_shots=args.n_shots, batch_size=bs)
    finally:
        query.patch_query_heads = original
    if args.plain_after and not args.scan_only:
        with phase("plain forward, all prompts (after the scan)", rows, base_rss):
            plain_forwards(model, every, bs, unembed=True)

    scan = rows["whole scan (indirect_effect)"]
    out: dict[str, Any] = {"model": args.model, "tasks": tasks, "n_prompts": n_prompts, "tokens": tokens,
                           "threads": args.threads, "full_logits": os.environ.get("TLENS_ICL_FULL_LOGITS", ""),
                           "route": res.info.get("engine"), "phases": rows,
                           "patching_step": {"wall_s": patch_time[0], "cpu_s": patch_time[1]},
                           "layers": cfg.n_layers, "heads": cfg.n_heads, "d_vocab": cfg.d_vocab,
                           "rss_loaded_mib": base_rss / 1024}
    print(f"route {out['route']}; patching step (corrupted base runs + every head's query copies) "
          f"{patch_time[0]:.1f} s wall, {patch_time[1]:.1f} s CPU")
    for clock in ("cpu_s", "wall_s") if not args.scan_only else ():
        plains = [rows[k][clock] for k in rows if k.startswith("plain forward, all prompts")]
        plain = sum(plains) / len(plains)
        corr = rows["plain forward, corrupted prompts only"][clock]
        stopped = rows.get("forward stopped before the unembedding, all prompts", {}).get(clock, float("nan"))
        ratio = scan[clock] / plain
        heads_fe = (scan[clock] - 1.3 * plain) / corr
        out[clock] = {"plain": plain, "plain_corrupted": corr, "stopped": stopped, "scan": scan[clock],
                      "scan_over_plain": ratio, "scan_over_stopped": scan[clock] / stopped,
                      "fe_left_for_heads_after_1.3x": heads_fe,
                      "aim_met": scan[clock] <= 1.3 * plain + 2 * corr}
        print(f"[{clock}] scan / plain forward of all {n_prompts} prompts = {ratio:.2f}x (vs forwards stopped "
              f"before the unembedding {scan[clock] / stopped:.2f}x); (scan - 1.3 x plain) = {heads_fe:.2f} "
              f"forward-equivalents of the corrupted prompts; aim (<= 1.3x + 2) "
              f"{'met' if out[clock]['aim_met'] else 'NOT met'}", flush=True)
    out["peak_rss_mib"] = {k: v["peak_rss_mib"] for k, v in rows.items() if "peak_rss_mib" in v}
    out["top_heads"] = [str(h) for h in res.top_heads(5)]
    print(res.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
