"""The main job (``tlens-icl run``): ICL curve -> causal mediation -> function vectors, end to end.

On an embedded model the tasks come from its card, grouped by family; bitwise tasks use held-out
operand pairs for evaluation and shuffled-label corruption, word tasks use zero-shot corruption
(shuffled labels are uninformative when the output type reveals the task). On other models pass
``tasks=`` (one family, shuffled-label corruption).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tlens_icl._ties import argbest
from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.accuracy import icl_accuracy
from tlens_icl.analyses.causal.mediation import indirect_effect
from tlens_icl.analyses.vectors.common import LayerSweepResult
from tlens_icl.analyses.vectors.function_vectors import (
    function_vector,
    function_vector_sweep,
)
from tlens_icl.models.loading import heldout_task, model_meta, require_eval_mode
from tlens_icl.results.base import run_info
from tlens_icl.results.checkpoint import open_checkpoint

#: The corruption used for causal mediation, per task family.
FAMILY_CORRUPTION = {"word": "zero_shot", "bitwise": "shuffled_labels"}


def _families(model: ModelLike, tasks: Sequence[str] | None) -> dict[str, list[str]]:
    if tasks:
        return {"tasks": list(tasks)}
    families = model_meta(model).get("families")
    if not families:
        raise ValueError("This model has no model card listing its tasks; pass tasks=[...].")
    return {f: list(v) for f, v in families.items()}


def _eval_task(model: ModelLike, name: str) -> Any:
    try:
        return heldout_task(model, name) if model_meta(model).get("families") else name
    except Exception:  # noqa: BLE001 - no held-out split recorded for this task: use the library task
        return name


@checked
def run_pipeline(
    model: ModelLike, *, tasks: Sequence[str] | None = None, out: str | Path | None = None, n: int = 48,
    n_mean: int = 32, n_corrupted: int = 16, n_shots: int = 8, k: int = 10, seed: int = 0, progress: bool | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Run the main job; return (and optionally write to ``out``) every result.

    Returns a dict with ``accuracy`` (:class:`AccuracyResult`), ``mediation`` (family ->
    ``IndirectEffectResult``), ``fv_sweeps`` (task -> ``LayerSweepResult`` of zero-shot accuracy with the
    task's top-``k``-head function vector added after each layer), ``fv_layer`` (the one layer with the
    best mean zero-shot accuracy over tasks) and ``fv_table`` (per task: zero-shot accuracy without and
    with the FV at that layer).

    ``checkpoint``: a folder that makes the run resumable (``tlens-icl run --out DIR`` uses ``DIR/checkpoint``):
    accuracy per task and shot count, mediation per task and chunk of prompts, and each task's function-vector
    sweep are written there when done and loaded, not recomputed, when the same run is started again.
    """
    require_eval_mode(model, "run_pipeline")
    families = _families(model, tasks)
    all_tasks = [t for names in families.values() for t in names]
    eval_tasks = {t: _eval_task(model, t) for t in all_tasks}
    ck = open_checkpoint(checkpoint, "run_pipeline", dict(families=families, n=n, n_mean=n_mean,
                                                          n_corrupted=n_corrupted, n_shots=n_shots, k=k, seed=seed), model)
    part = (lambda name: None) if ck.folder is None else (lambda name: ck.folder / name)  # type: ignore[operator]
    results: dict[str, Any] = {}
    results["accuracy"] = icl_accuracy(model, list(eval_tasks.values()), n_shots=[0, 1, 2, 4, n_shots], n=n, seed=seed,
                                       progress=progress, checkpoint=part("accuracy"))
    results["mediation"] = {
        fam: indirect_effect(model, names, n_mean=n_mean, n_corrupted=n_corrupted, n_shots=n_shots, seed=seed,
                             corruption=FAMILY_CORRUPTION.get(fam, "shuffled_labels"), progress=progress,
                             checkpoint=part(f"mediation_{fam}"))
        for fam, names in families.items()
    }
    sweeps = {}
    for fam, names in families.items():
        for t in names:
            fv = function_vector(model, results["mediation"][fam], task=t, k=k)
            sweeps[t] = ck.unit(f"fv_sweep/{t}", lambda fv=fv, t=t: function_vector_sweep(
                model, fv, eval_tasks[t], settings=("zero_shot",), n=n, n_shots=n_shots, seed=seed + 2,
                progress=progress), result_type=LayerSweepResult)
    results["fv_sweeps"] = sweeps
    layers = next(iter(sweeps.values())).layers
    mean_by_layer = torch.stack([s.accuracy()[0] for s in sweeps.values()]).mean(0)
    best = layers[int(argbest(mean_by_layer))]  # near-ties: the earliest layer
    results["fv_layer"] = best
    results["fv_mean_by_layer"] = dict(zip(layers, (float(x) for x in mean_by_layer)))
    results["fv_table"] = _fv_table(sweeps, best)
    results["families"] = families
    results["settings"] = {"model": run_info(model)["model"], "tasks": ", ".join(all_tasks), "n (queries per cell)": n,
                           "n_mean": n_mean, "n_corrupted": n_corrupted, "n_shots": n_shots, "k (FV heads)": k,
                           "seed": seed, "corruption per family": ", ".join(
                               f"{f}: {FAMILY_CORRUPTION.get(f, 'shuffled_labels')}" for f in families)}
    if out is not None:
        _write(results, Path(out), model)
    return results


def _fv_table(sweeps: dict[str, Any], layer: int) -> Any:
    import pandas as pd

    rows = []
    for t, s in sweeps.items():
        j = s.layers.index(layer)
        rows.append({"task": t, "zero_shot": float(s.baseline_accuracy()[0]),
                     "zero_shot_plus_fv": float(s.accuracy()[0, j])})
    df = pd.DataFrame(rows)
    df["gain"] = df["zero_shot_plus_fv"] - df["zero_shot"]
    return df


def plot_fv_sweep(results: dict[str, Any]) -> Any:
    """The main job's headline figure: zero-shot accuracy with each task's function vector added after each
    block, one panel per task family (each task thin, the mean bold with a 95% CI over the pooled prompts),
    against the same prompts without the vector and the ICL accuracy with demonstrations."""
    from tlens_icl.results.stats import clopper_pearson
    from tlens_icl.viz.plots import sweep_panels

    sweeps, acc = results["fv_sweeps"], results["accuracy"]
    layers = next(iter(sweeps.values())).layers
    icl = dict(zip(acc.tasks, acc.accuracy()[:, -1].tolist()))
    panels, n = {}, next(iter(sweeps.values())).correct.shape[-1]
    for fam, names in results["families"].items():
        correct = torch.stack([sweeps[t].correct[0] for t in names])  # [task, layer, example]
        lo, hi = clopper_pearson(correct.sum((0, 2)), correct.shape[0] * correct.shape[2])
        mean = correct.mean((0, 2))
        refs = [(float(torch.stack([sweeps[t].baseline_accuracy()[0] for t in names]).mean()), "zero-shot, no vector")]
        shots = [icl[t] for t in names if t in icl]
        if shots:
            refs.append((sum(shots) / len(shots), f"ICL with {acc.n_shots[-1]} demonstrations"))
        panels[f"{fam} tasks ({len(names)})"] = {
            "lines": {t: sweeps[t].accuracy()[0].tolist() for t in names}, "mean": mean.tolist(),
            "mean_lo": lo.tolist(), "mean_hi": hi.tolist(), "refs": refs, "best": layers[int(argbest(mean))]}
    med = next(iter(results["mediation"].values()))
    k = results.get("settings", {}).get("k (FV heads)", "top")
    return sweep_panels(layers, panels, xlabel="function vector added after block", ylabel="zero-shot top-1 accuracy",
                        title="Function vectors restore zero-shot accuracy",
                        subtitle=f"model {med.model_name}; {k}-head function vectors (heads by AIE); n={n} held-out "
                                 "zero-shot prompts per task; band: 95% CI of the mean (pooled prompts)")


def _write(results: dict[str, Any], out: Path, model: ModelLike | None = None) -> None:
    """Results, figures and CSVs under ``out``, and ``out/index.html`` that shows them all."""
    import matplotlib.pyplot as plt

    from tlens_icl.analyses.causal.mediation import head_attention_html
    from tlens_icl.prompts.pairs import make_prompts
    from tlens_icl.results.report import export_section, table_section, write_index
    from tlens_icl.viz.report import ReportFigure

    out.mkdir(parents=True, exist_ok=True)
    acc = results["accuracy"]
    sections = [export_section(acc, out, "accuracy", "accuracy", heading="ICL accuracy by number of demonstrations")]
    acc.to_dataframe().to_csv(out / "accuracy.csv", index=False)
    fig = plot_fv_sweep(results)
    fig.savefig(out / "function_vector_sweep.png", dpi=150)
    plt.close(fig)
    results["fv_table"].to_csv(out / "function_vectors.csv", index=False)
    by_layer = ", ".join(f"block {L}: {a:.3f}" for L, a in results["fv_mean_by_layer"].items())
    fv = results["fv_table"]
    sections.insert(0, table_section(
        "Function vectors (headline)", {f"zero-shot accuracy without and with the FV after block {results['fv_layer']}": fv},
        text=(f"Mean zero-shot accuracy with the function vector added after each block: {by_layer}. At block "
              f"{results['fv_layer']}: {fv['zero_shot'].mean():.3f} -> {fv['zero_shot_plus_fv'].mean():.3f} "
              f"(gain {fv['gain'].mean():+.3f})."),
        figures=[ReportFigure((out / "function_vector_sweep.png").read_bytes(),
                              "Zero-shot accuracy with each task's function vector added after each block",
                              "function_vector_sweep.png")],
        files=["function_vectors.csv", "function_vector_sweep.png", "accuracy.csv"]))
    for fam, med in results["mediation"].items():
        sec = export_section(med, out, f"mediation_{fam}", f"aie_{fam}", k=10,
                             heading=f"Causal mediation: {fam} tasks (corruption {med.corruption})")
        if model is not None:
            prompt = make_prompts(med.tasks[0], model, n=1, n_shots=med.n_shots, seed=0)
            view = head_attention_html(model, prompt, med.top_heads(4), path=out / f"mediation_{fam}" / "attention.html")
            sec.views.append(view)
            sec.files.append(f"mediation_{fam}/attention.html")
        sections.append(sec)
    write_index(out, title=f"tlens-icl run: {acc.model_name}", sections=sections, settings=results["settings"],
                subtitle="ICL curve -> causal mediation -> function vectors (the main job)")


def summarize(results: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_pipeline`'s results."""
    acc = results["accuracy"]
    lines = ["ICL accuracy (rows: task, columns: shots):",
             acc.table().to_string(float_format=lambda x: f"{x:.3f}"),
             "mean: " + ", ".join(f"{s}-shot {float(a):.3f}" for s, a in zip(acc.n_shots, acc.accuracy().mean(0)))]
    for fam, med in results["mediation"].items():
        heads = ", ".join(f"{h} {float(med.mean()[h.layer, h.head]):.3f}" for h in med.top_heads(5))
        lines.append(f"top heads by AIE ({fam}, corruption={med.corruption}): {heads}")
    fv = results["fv_table"]
    by_layer = ", ".join(f"block {L}: {a:.3f}" for L, a in results["fv_mean_by_layer"].items())
    lines.append(f"mean zero-shot accuracy with the FV added after each block: {by_layer}")
    lines.append(f"function vectors (top-10 heads) added after block {results['fv_layer']} of zero-shot prompts:")
    lines.append(fv.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    lines.append(f"mean zero-shot accuracy {fv['zero_shot'].mean():.3f} -> {fv['zero_shot_plus_fv'].mean():.3f} "
                 f"(gain {fv['gain'].mean():+.3f})")
    return "\n".join(lines)
