"""The main job (``tlens-icl run``): ICL curve -> causal mediation -> function vectors, end to end.

Every task's items are split three ways, so that no number is chosen on the items it is reported on:

* **test**: the headline items. On an embedded model, a bitwise task's held-out operand pairs (never seen in
  training); otherwise a seeded 30% of the task's usable items. The ICL curve and the function-vector
  headline are scored on the *same* test prompts (the zero-shot prompts are identical).
* **fit**: the items of the causal-mediation prompts whose mean head outputs make the function vectors.
* **val**: the items on which the function vector's layer is chosen (``VAL_SHARE`` of the non-test items).

The function vector of a task is the sum of the top-``k`` heads by the AIE averaged over the task's family
(Todd et al.'s head set A), each head's mean output taken over that task's clean prompts. On an embedded model
the tasks come from its card, grouped by family; word tasks use zero-shot corruption for the mediation
(shuffled labels are uninformative when the output type reveals the task), bitwise tasks shuffled labels.
On other models pass ``tasks=`` (one family, shuffled-label corruption).
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
from tlens_icl.analyses.vectors.function_vectors import function_vector, function_vector_sweep
from tlens_icl.errors import TlensICLError
from tlens_icl.models.loading import heldout_task, model_meta
from tlens_icl.prompts.pairs import usable_task
from tlens_icl.results.base import run_info
from tlens_icl.results.checkpoint import open_checkpoint
from tlens_icl.tasks import Task

#: The corruption used for causal mediation, per task family.
FAMILY_CORRUPTION = {"word": "zero_shot", "bitwise": "shuffled_labels"}
#: Share of a task's items held out as test items when the model records no held-out split for it.
TEST_SHARE = 0.3
#: Share of the remaining (non-test) items used to choose the function vector's layer; the rest builds it.
VAL_SHARE = 0.4
#: The split protocol, recorded in the checkpoint (a checkpoint of another protocol is not reused).
PROTOCOL = "fit/val/test by items; FV heads by family AIE; layer chosen on val"


def _families(model: ModelLike, tasks: Sequence[str] | None) -> dict[str, list[str]]:
    if tasks:
        return {"tasks": list(tasks)}
    families = model_meta(model).get("families")
    if not families:
        raise TlensICLError("This model has no model card listing its tasks; pass tasks=[...].")
    return {f: list(v) for f, v in families.items()}


def task_splits(model: ModelLike, name: str, *, seed: int = 0) -> dict[str, Task]:
    """The ``fit`` / ``val`` / ``test`` items of task ``name`` for this model (see the module docstring).

    Test items are the model's held-out items when its card holds out a minority of the task's items (items
    never seen in training: bitwise operand pairs on ``icl-tiny``; its word tasks' "held-out" pool is the whole
    vocabulary), else a seeded ``TEST_SHARE`` of the usable items; ``val`` is ``VAL_SHARE`` of the rest.
    """
    pool = usable_task(model, name)
    held = None
    if model_meta(model).get("families"):
        try:
            held = heldout_task(model, name)
        except TlensICLError:  # the card records no held-out items for this task
            held = None
    if held is not None and 2 * len(held) <= len(pool):
        test_inputs = {it.input for it in held.items}
        test = pool.filter(lambda it: it.input in test_inputs)
        rest = pool.filter(lambda it: it.input not in test_inputs)
    else:
        rest, test = pool.split(TEST_SHARE, seed=seed)
    fit, val = rest.split(VAL_SHARE, seed=seed)
    return {"fit": fit, "val": val, "test": test}


@checked
def run_pipeline(
    model: ModelLike, *, tasks: Sequence[str] | None = None, out: str | Path | None = None, n: int = 48,
    n_mean: int = 32, n_corrupted: int = 16, n_shots: int = 8, k: int = 10, seed: int = 0, progress: bool | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Run the main job; return (and optionally write to ``out``) every result.

    Returns a dict with ``splits`` (task -> fit/val/test :class:`Task`), ``accuracy``
    (:class:`~tlens_icl.analyses.accuracy.AccuracyResult` on the test items, ``n`` queries per task and shot
    count), ``mediation`` (family -> ``IndirectEffectResult`` on the fit items), ``fv_val`` and ``fv_sweeps``
    (task -> ``LayerSweepResult``: zero-shot accuracy with the task's function vector added after each block, on
    validation and on test prompts), ``fv_layer`` (the block with the best mean validation accuracy over tasks;
    ties: the earlier block), ``fv_val_by_layer`` and ``fv_mean_by_layer`` (mean accuracy by block on validation /
    test prompts) and ``fv_table`` (per task, on the test prompts: zero-shot accuracy without and with the FV at
    that block, 95% Clopper-Pearson intervals, n).

    ``checkpoint``: a folder that makes the run resumable (``tlens-icl run --out DIR`` uses ``DIR/checkpoint``):
    accuracy per task and shot count, mediation per task and chunk of prompts, and each task's function-vector
    sweeps are written there when done and loaded, not recomputed, when the same run is started again.
    """
    families = _families(model, tasks)
    all_tasks = [t for names in families.values() for t in names]
    splits = {t: task_splits(model, t, seed=seed) for t in all_tasks}
    short = {f"{t}/{part}": len(s[part]) for t, s in splits.items() for part, need in
             (("test", n), ("fit", n_mean)) if len(s[part]) < need}
    if short:
        raise TlensICLError(f"run_pipeline(): too few items for n={n} test queries / n_mean={n_mean} mediation "
                            f"prompts per task: {short} (items per split). Lower n / n_mean.")
    ck = open_checkpoint(checkpoint, "run_pipeline", dict(families=families, n=n, n_mean=n_mean, n_corrupted=n_corrupted,
                                                          n_shots=n_shots, k=k, seed=seed, protocol=PROTOCOL), model)
    part = (lambda name: None) if ck.folder is None else (lambda name: ck.folder / name)  # type: ignore[operator]
    results: dict[str, Any] = {"splits": splits}
    results["accuracy"] = icl_accuracy(model, [splits[t]["test"] for t in all_tasks], shots=_shot_list(n_shots), n=n,
                                       seed=seed, progress=progress, checkpoint=part("accuracy"))
    results["mediation"] = {
        fam: indirect_effect(model, [splits[t]["fit"] for t in names], n_mean=n_mean, n=n_corrupted,
                             n_shots=n_shots, seed=seed, corruption=FAMILY_CORRUPTION.get(fam, "shuffled_labels"),
                             progress=progress, checkpoint=part(f"mediation_{fam}"))
        for fam, names in families.items()
    }
    val_sweeps, test_sweeps = {}, {}
    for fam, names in families.items():
        for t in names:
            fv = function_vector(model, results["mediation"][fam], task=t, k=k, heads_by="mean")
            val = splits[t]["val"]
            val_sweeps[t] = ck.unit(f"fv_val/{t}", lambda fv=fv, val=val: function_vector_sweep(
                model, fv, val, settings=("zero_shot",), n=min(n, len(val)), seed=seed, progress=progress),
                result_type=LayerSweepResult)
            test_sweeps[t] = ck.unit(f"fv_test/{t}", lambda fv=fv, t=t: function_vector_sweep(
                model, fv, splits[t]["test"], settings=("zero_shot",), n=n, seed=seed, progress=progress),
                result_type=LayerSweepResult)
    results["fv_val"], results["fv_sweeps"] = val_sweeps, test_sweeps
    layers = next(iter(test_sweeps.values())).layers
    val_by_layer = _pooled(val_sweeps)
    best = layers[int(argbest(val_by_layer))]  # near-ties (within float tolerance): the earlier block
    results["fv_layer"] = best
    results["fv_val_by_layer"] = dict(zip(layers, (float(x) for x in val_by_layer)))
    results["fv_mean_by_layer"] = dict(zip(layers, (float(x) for x in _pooled(test_sweeps))))
    results["fv_table"] = _fv_table(test_sweeps, best, families)
    results["families"] = families
    results["settings"] = {
        "model": run_info(model)["model"], "tasks": ", ".join(all_tasks),
        "n (test queries per task and shot count)": n, "n_mean (clean mediation prompts per task)": n_mean,
        "n_corrupted (corrupted mediation prompts per task)": n_corrupted, "n_shots": n_shots, "k (FV heads)": k,
        "seed": seed, "corruption per family": ", ".join(f"{f}: {FAMILY_CORRUPTION.get(f, 'shuffled_labels')}"
                                                         for f in families),
        "items per task (fit / val / test)": ", ".join(
            f"{t} {len(s['fit'])}/{len(s['val'])}/{len(s['test'])}" for t, s in splits.items())}
    if out is not None:
        _write(results, Path(out), model)
    return results


def _shot_list(n_shots: int) -> list[int]:
    return sorted({0, 1, 2, 4, n_shots} if n_shots >= 4 else set(range(n_shots + 1)))


def _pooled(sweeps: dict[str, Any]) -> torch.Tensor:
    """Mean accuracy by layer over tasks (each task weighted equally)."""
    return torch.stack([s.accuracy()[0] for s in sweeps.values()]).mean(0)


def _fv_table(sweeps: dict[str, Any], layer: int, families: dict[str, list[str]]) -> Any:
    """Per task, on the test prompts: zero-shot accuracy without / with the FV at ``layer``, with 95% intervals."""
    import pandas as pd

    from tlens_icl.results.stats import clopper_pearson

    family_of = {t: f for f, names in families.items() for t in names}
    rows = []
    for t, s in sweeps.items():
        j = s.layers.index(layer)
        base, with_fv = s.baseline_correct[0], s.correct[0, j]
        n = int(base.numel())
        (b_lo, f_lo), (b_hi, f_hi) = clopper_pearson(torch.stack([base.sum(), with_fv.sum()]), n)
        rows.append({"task": t, "family": family_of.get(t, ""), "zero_shot": float(base.mean()),
                     "zero_shot_ci_low": float(b_lo), "zero_shot_ci_high": float(b_hi),
                     "zero_shot_plus_fv": float(with_fv.mean()), "plus_fv_ci_low": float(f_lo),
                     "plus_fv_ci_high": float(f_hi), "n": n})
    df = pd.DataFrame(rows)
    df.insert(len(df.columns) - 1, "gain", df["zero_shot_plus_fv"] - df["zero_shot"])
    return df


def fv_headline(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: mean zero-shot accuracy over the test prompts of every task without and with the
    function vector at the chosen block, with 95% Clopper-Pearson intervals of the pooled prompts."""
    from tlens_icl.results.stats import clopper_pearson

    sweeps, layer = results["fv_sweeps"], results["fv_layer"]
    base = torch.cat([s.baseline_correct[0] for s in sweeps.values()])
    with_fv = torch.cat([s.correct[0, s.layers.index(layer)] for s in sweeps.values()])
    (b_lo, f_lo), (b_hi, f_hi) = clopper_pearson(torch.stack([base.sum(), with_fv.sum()]), int(base.numel()))
    return {"layer": layer, "n": int(base.numel()), "n_tasks": len(sweeps), "zero_shot": float(base.mean()),
            "zero_shot_ci": (float(b_lo), float(b_hi)), "plus_fv": float(with_fv.mean()),
            "plus_fv_ci": (float(f_lo), float(f_hi))}


def metric_note(results: dict[str, Any]) -> str:
    """What the function-vector table's zero-shot column is, next to the accuracy table's 0-shot column."""
    acc, table = results["accuracy"], results["fv_table"]
    if 0 not in acc.n_shots:
        return ""
    first = acc.first_token_correct if acc.first_token_correct is not None else acc.correct
    s0 = acc.n_shots.index(0)
    same_first = all(abs(float(first[acc.tasks.index(t), s0].mean()) - z) < 1e-9 for t, z in
                     zip(table["task"], table["zero_shot"]) if t in acc.tasks)
    exact = acc.exact_match if acc.exact_match is not None else acc.correct
    differ = [t for t in table["task"] if t in acc.tasks and
              not torch.equal(exact[acc.tasks.index(t), s0], first[acc.tasks.index(t), s0])]
    text = ("The function-vector table scores first-token top-1 (the metric of Todd et al.'s sweeps) on the same "
            "zero-shot test prompts as the 0-shot column of the accuracy table, which scores whole-answer exact "
            "match")
    if not same_first:
        return text + "."
    if not differ:
        return text + "; the two metrics agree on every prompt here (every answer is one token), so the columns are equal."
    return text + f"; they differ on {', '.join(differ)}, whose answers have several tokens."


def plot_fv_sweep(results: dict[str, Any]) -> Any:
    """The main job's headline figure: zero-shot accuracy on test prompts with each task's function vector added
    after each block, one panel per task family (each task thin, the mean bold with a 95% CI over the pooled
    prompts, the validation mean dashed, the block chosen on validation items marked), against the same prompts
    without the vector and the ICL accuracy with demonstrations."""
    from tlens_icl.results.stats import clopper_pearson
    from tlens_icl.viz.plots import sweep_panels

    sweeps, val, acc = results["fv_sweeps"], results["fv_val"], results["accuracy"]
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
            refs.append((sum(shots) / len(shots), f"ICL with {acc.n_shots[-1]} demonstrations ({acc.metric})"))
        panels[f"{fam} tasks ({len(names)})"] = {
            "lines": {t: sweeps[t].accuracy()[0].tolist() for t in names}, "mean": mean.tolist(),
            "mean_lo": lo.tolist(), "mean_hi": hi.tolist(), "refs": refs, "best": results["fv_layer"],
            "dashed": torch.stack([val[t].accuracy()[0] for t in names]).mean(0).tolist()}
    med = next(iter(results["mediation"].values()))
    k = results.get("settings", {}).get("k (FV heads)", "top")
    return sweep_panels(layers, panels, xlabel="function vector added after block", ylabel="zero-shot top-1 accuracy",
                        title="Function vectors restore zero-shot accuracy",
                        best_label="block chosen on validation items", dashed_label="mean over tasks, validation items",
                        subtitle=f"model {med.model_name}; {k}-head function vectors (heads by the family's AIE); "
                                 f"n={n} test zero-shot prompts per task; band: 95% CI of the mean (pooled prompts)")


def _ci(lo: float, hi: float) -> str:
    return f"{lo:.3f}\u2013{hi:.3f}"


def fv_display_table(results: dict[str, Any]) -> Any:
    """The function-vector table as the report shows it (intervals as one column each)."""
    import pandas as pd

    df = results["fv_table"]
    return pd.DataFrame({
        "task": df["task"], "family": df["family"], "zero-shot": df["zero_shot"],
        "95% CI": [_ci(a, b) for a, b in zip(df["zero_shot_ci_low"], df["zero_shot_ci_high"])],
        "zero-shot + FV": df["zero_shot_plus_fv"],
        "95% CI ": [_ci(a, b) for a, b in zip(df["plus_fv_ci_low"], df["plus_fv_ci_high"])],
        "gain": df["gain"], "n": df["n"]})


def headline_text(results: dict[str, Any]) -> str:
    """One paragraph: what the function vector is, where its block was chosen, and the test headline."""
    h = fv_headline(results)
    k = results.get("settings", {}).get("k (FV heads)", "top-k")
    return (f"Each task's function vector is the sum of the top {k} heads by its family's average indirect effect "
            f"(the mean output of each head over the task's clean prompts), added to the residual stream at the query "
            f"after one block. The block, {h['layer']}, is the one with the best mean zero-shot accuracy on "
            f"<b>validation</b> items; the numbers below are on separate <b>test</b> items ({h['n'] // h['n_tasks']} "
            f"zero-shot prompts per task, {h['n']} in all). Mean zero-shot accuracy over {h['n_tasks']} tasks: "
            f"{h['zero_shot']:.3f} (95% CI {_ci(*h['zero_shot_ci'])}) without the vector, {h['plus_fv']:.3f} "
            f"(95% CI {_ci(*h['plus_fv_ci'])}) with it; gain {h['plus_fv'] - h['zero_shot']:+.3f}. "
            + metric_note(results))


def _write(results: dict[str, Any], out: Path, model: ModelLike | None = None) -> None:
    """Results, figures and CSVs under ``out``, and ``out/index.html`` that shows them all."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from tlens_icl.analyses.causal.mediation import head_attention_html
    from tlens_icl.prompts.pairs import make_prompts
    from tlens_icl.results.report import export_section, table_section, write_index
    from tlens_icl.viz.html import HTMLView
    from tlens_icl.viz.report import ReportFigure

    out.mkdir(parents=True, exist_ok=True)
    acc = results["accuracy"]
    sections = [export_section(acc, out, "accuracy", "accuracy",
                               heading="ICL accuracy by number of demonstrations (test items)")]
    acc.to_dataframe().to_csv(out / "accuracy.csv", index=False)
    fig = plot_fv_sweep(results)
    fig.savefig(out / "function_vector_sweep.png", dpi=150)
    plt.close(fig)
    results["fv_table"].to_csv(out / "function_vectors.csv", index=False)
    by_layer = pd.DataFrame({"block": list(results["fv_val_by_layer"]),
                             "validation items": list(results["fv_val_by_layer"].values()),
                             "test items": list(results["fv_mean_by_layer"].values())})
    by_layer.to_csv(out / "function_vectors_by_block.csv", index=False)
    sections.insert(0, table_section(
        "Function vectors (headline)",
        {f"Zero-shot accuracy on test prompts without and with the function vector after block "
         f"{results['fv_layer']}": fv_display_table(results),
         "Mean zero-shot accuracy over tasks with the function vector after each block": by_layer},
        text=headline_text(results),
        figures=[ReportFigure((out / "function_vector_sweep.png").read_bytes(),
                              "Zero-shot accuracy with each task's function vector added after each block",
                              "function_vector_sweep.png")],
        files=["function_vectors.csv", "function_vectors_by_block.csv", "function_vector_sweep.png", "accuracy.csv"]))
    for fam, med in results["mediation"].items():
        sec = export_section(med, out, f"mediation_{fam}", f"aie_{fam}", k=10,
                             heading=f"Causal mediation: {fam} tasks (corruption {med.corruption}, fit items)")
        if model is not None:
            heads = med.top_heads(4)
            views = []
            for t in results["families"][fam]:
                prompt = make_prompts(model, results["splits"][t]["test"], n=1, n_shots=med.n_shots,
                                      seed=results["settings"]["seed"])
                view = head_attention_html(model, prompt, heads)
                views.append(HTMLView(view.parts, title=f"Attention of the top heads on one {t} prompt",
                                      description=view.description))
            HTMLView(tuple(p for v in views for p in (f"<h2>{v.title}</h2>", *v.parts)),
                     title=f"Attention of the top {fam} heads").save(out / f"mediation_{fam}" / "attention.html")
            sec.views += views
            sec.files.append(f"mediation_{fam}/attention.html")
        sections.append(sec)
    write_index(out, title=f"tlens-icl run: {acc.model_name}", sections=sections, settings=results["settings"],
                subtitle="ICL curve -> causal mediation -> function vectors (the main job)")


def summarize(results: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_pipeline`'s results."""
    acc = results["accuracy"]
    lines = [f"ICL accuracy on test items ({acc.metric}; rows: task, columns: shots):",
             acc.table().to_string(float_format=lambda x: f"{x:.3f}"),
             "mean: " + ", ".join(f"{s}-shot {float(a):.3f}" for s, a in zip(acc.n_shots, acc.accuracy().mean(0)))]
    for fam, med in results["mediation"].items():
        heads = ", ".join(f"{h} {float(med.mean()[h.layer, h.head]):.3f}" for h in med.top_heads(5))
        lines.append(f"top heads by AIE ({fam}, corruption={med.corruption}): {heads}")
    fmt = lambda d: ", ".join(f"block {L}: {a:.3f}" for L, a in d.items())  # noqa: E731
    lines.append(f"mean zero-shot accuracy with the FV added after each block, validation items: "
                 f"{fmt(results['fv_val_by_layer'])}")
    lines.append(f"  test items: {fmt(results['fv_mean_by_layer'])}")
    lines.append(f"function vectors added after block {results['fv_layer']} (chosen on validation items), "
                 "zero-shot test prompts:")
    lines.append(fv_display_table(results).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    h = fv_headline(results)
    lines.append(f"mean zero-shot accuracy {h['zero_shot']:.3f} (95% CI {_ci(*h['zero_shot_ci'])}) -> {h['plus_fv']:.3f} "
                 f"(95% CI {_ci(*h['plus_fv_ci'])}), gain {h['plus_fv'] - h['zero_shot']:+.3f}, n={h['n']} prompts")
    return "\n".join(lines)
