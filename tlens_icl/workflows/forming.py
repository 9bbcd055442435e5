"""ICL as it forms, over training seeds: train ``icl-forming`` at each seed (or reuse a trained folder), follow
its final top heads back through its checkpoints (:func:`~tlens_icl.head_dynamics`) and store, per seed, the
dynamics result, the training log and the checkpoint index; then one table of the answers across seeds.

``tlens-icl forming --seeds 0 1 2 --out studies/forming`` runs it (seed 0 is the shipped model).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlens_icl.workflows.dynamics import HeadDynamicsResult, head_dynamics
from tlens_icl.models.embedded import EMBEDDED_MODELS, checkpoint_steps, read_card

MODEL = "icl-forming"
#: head_dynamics sizes of the stored study (per task and checkpoint).
SIZES = {"n": 48, "n_mean": 32, "n_corrupted": 16, "n_random": 32, "length": 20, "k": 3, "n_shots": 4}


def seed_folder(seed: int, models: Path) -> Path:
    """The trained model of ``seed``: the shipped ``icl-forming`` when it was trained with that seed, else
    ``models/seed<seed>`` (trained there by :func:`forming_study` when missing)."""
    if MODEL in EMBEDDED_MODELS and int(EMBEDDED_MODELS[MODEL]["training"]["seed"]) == seed:
        return Path(EMBEDDED_MODELS[MODEL]["path"])
    return Path(models) / f"seed{seed}"


def forming_study(seeds: Sequence[int], out: str | Path, *, models: str | Path, sizes: dict[str, int] | None = None,
                  progress: bool | None = None, log: Any = print) -> dict[str, Any]:
    """Train (where missing) and measure every seed; write ``out/seed<s>/{dynamics/, train_log.csv,
    checkpoints.json}`` and ``out/summary.json``; return the summary (:func:`seed_table`)."""
    from tlens_icl.models.embedded.forming import train_forming

    sz = {**SIZES, **(sizes or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        folder = seed_folder(seed, Path(models))
        if not checkpoint_steps(folder):
            log(f"[forming] training seed {seed} into {folder} (about 15 minutes on one thread)")
            train_forming(folder, seed=seed, progress=progress)
        card = read_card(folder)
        if int(card["training"]["seed"]) != seed:
            raise ValueError(f"{folder} was trained with seed {card['training']['seed']}, not {seed}.")
        dest = out / f"seed{seed}"
        if (dest / "dynamics").exists():
            log(f"[forming] seed {seed}: stored, skipped")
            continue
        log(f"[forming] seed {seed}: following the final heads through {len(checkpoint_steps(folder))} checkpoints")
        shipped = MODEL in EMBEDDED_MODELS and folder == Path(EMBEDDED_MODELS[MODEL]["path"])
        res = head_dynamics(MODEL if shipped else str(folder), progress=progress, **sz)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "train_log.csv", dest / "train_log.csv")
        shutil.copyfile(folder / "checkpoints" / "index.json", dest / "checkpoints.json")
        res.save(dest / "dynamics", overwrite=True)
    summary = seed_table(load_forming(out, seeds), load_indexes(out, seeds))
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


def load_indexes(folder: str | Path, seeds: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The checkpoint index (logged losses and accuracy per checkpoint) stored with each seed of a study folder."""
    out = {}
    for s in seeds:
        with open(Path(folder) / f"seed{s}" / "checkpoints.json", encoding="utf-8") as f:
            out[s] = json.load(f)
    return out


def loss_in_band(index: dict[str, Any], band: tuple[float, float] | None, kind: str = "repeat") -> dict[str, float] | None:
    """The logged loss of ``kind`` rows at the start and end of ``band`` (linear between checkpoints) and the
    share of its whole fall over training (first to last checkpoint) that happens inside the band."""
    if band is None:
        return None
    steps = [float(c["step"]) for c in index["checkpoints"]]
    loss = [float(c["loss"][kind]) for c in index["checkpoints"]]

    def at(x: float) -> float:
        for i in range(1, len(steps)):
            if x <= steps[i]:
                t = (x - steps[i - 1]) / (steps[i] - steps[i - 1])
                return loss[i - 1] + t * (loss[i] - loss[i - 1])
        return loss[-1]

    start, end = at(band[0]), at(band[1])
    return {"start": start, "end": end, "share_of_fall": (start - end) / (loss[0] - loss[-1])}


def seed_table(results: dict[int, HeadDynamicsResult],
               indexes: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per seed: :meth:`HeadDynamicsResult.milestones`, the final heads and accuracies and, with the seeds'
    checkpoint indexes, the logged loss of the repeat, lookup and Markov rows across the induction phase change
    (:func:`loss_in_band`) (JSON-able)."""
    rows = {}
    for seed, r in results.items():
        m = r.milestones()
        if indexes is not None:
            m["repeat_loss_in_band"] = loss_in_band(indexes[seed], m["induction_phase"], "repeat")
            m["lookup_loss_in_band"] = loss_in_band(indexes[seed], m["induction_phase"], "lookup")
            m["markov_loss_in_band"] = loss_in_band(indexes[seed], m["induction_phase"], "markov")
        last = {f"accuracy_{k}shot": round(float(r.accuracy[-1, j]), 4) for j, k in enumerate(r.n_shots)}
        last.update({f"accuracy_{r.n_shots[-1]}shot_{name.split()[0]}_ablated": round(float(r.ablated[-1, i]), 4)
                     for i, name in enumerate(("FV heads", "induction heads"))})
        rows[str(seed)] = {
            "steps": list(r.steps), "top_fv": list(r.top_fv), "top_induction": list(r.top_induction),
            "top_previous": list(r.top_previous),
            "induction_lag": [r.head_label(h).split()[-1] for h in r.top_induction],
            "final_induction_score": [round(v[-1], 4) for v in r.track(r.at_best_lag(), r.top_induction).values()],
            "final_lag1_induction_score": [round(v[-1], 4) for v in r.track(r.induction, r.top_induction).values()],
            **last, **_rounded(m),
        }
    return {"model": MODEL, "seeds": rows}


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    return v


def seeds_figure(results: dict[int, HeadDynamicsResult]) -> Any:
    """One step axis, one line per seed: the final induction heads' mean induction score, few-shot accuracy,
    the token-loss ICL score and the accuracy cost of ablating the final FV heads minus that of ablating the
    final induction heads (> 0: the FV heads carry more of few-shot ICL); each seed's phase change shaded."""
    from tlens_icl.viz.heads import training_panels

    def per_seed(f: Any) -> dict[str, tuple[list[int], list[float]]]:
        return {f"seed {s}": (list(r.steps), f(r)) for s, r in results.items()}

    panels = [
        ("induction score\n(final top induction heads)", per_seed(lambda r: r.induction_curve()), (0.0, 1.0)),
        ("few-shot accuracy", per_seed(lambda r: r.accuracy[:, -1].tolist()), (0.0, 1.0)),
        ("token-loss ICL score\n(negative = ICL)", per_seed(lambda r: r.icl_score.tolist()), None),
        ("accuracy cost:\nFV heads - induction heads",
         per_seed(lambda r: (r.ablated[:, 1] - r.ablated[:, 0]).tolist()), None),
    ]
    bands = [r.phase_change() for r in results.values()]
    bands = [b for b in bands if b is not None]
    band = (min(b[0] for b in bands), max(b[1] for b in bands)) if bands else None
    r0 = next(iter(results.values()))
    fig = training_panels(panels, band=band, band_label="induction phase change (earliest to latest seed)",
                          title=f"{MODEL}: {len(results)} training seeds ({r0.n_shots[-1]}-shot, {len(r0.tasks)} tasks, "
                                f"n = {r0.info.get('n', '?')} prompts per task, k = {r0.info.get('k', '?')} heads ablated)")
    fig.axes[-1].axhline(0.0, color="black", lw=0.8)
    return fig


def load_forming(folder: str | Path, seeds: Sequence[int] | None = None) -> dict[int, HeadDynamicsResult]:
    """The stored per-seed dynamics of a study folder (all seeds found, or ``seeds``)."""
    folder = Path(folder)
    found = sorted(int(p.name[4:]) for p in folder.glob("seed*") if (p / "dynamics").is_dir())
    return {s: HeadDynamicsResult.load(folder / f"seed{s}" / "dynamics") for s in (seeds or found)}


__all__ = ["MODEL", "SIZES", "loss_in_band", "forming_study", "load_indexes", "load_forming", "seed_folder", "seeds_figure", "seed_table"]
