"""Headline numbers of a stored study (recomputing nothing) and several models beside the papers.

:func:`study_summary` reads a study folder (``run_study``'s output) and returns plain numbers with 95 %
intervals: every interval is a percentile bootstrap that resamples prompts within tasks (paired where two
conditions share prompts), except decodability (Clopper-Pearson, from the result) and head depths (none: a
ranking's top heads are not a sample). :data:`FINDINGS` turns summaries into the rows of the cross-model
table, each with a verdict per model from a stated rule: ``yes`` / ``no`` / ``undecided`` (the interval
cannot separate the alternatives) / ``partly``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tlens_icl.errors import TlensICLError
from tlens_icl.workflows.run import StudySizes, chosen_layer, first_argmax, load_study

#: Display names of the library's real models (others show their own name).
LABELS = {"smollm2-135m": "SmolLM2-135M", "gemma-3-270m": "Gemma-3-270M", "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B",
          "qwen2.5-coder-1.5b": "Qwen2.5-Coder-1.5B"}
N_BOOT = 2000


def _boot(fn: Callable[..., float], *arrays: Tensor, seed: int = 0) -> tuple[float, float, float]:
    """``fn`` of the task-averaged means of ``arrays`` (each ``[task, example]``, examples paired across arrays)
    and its 95 % percentile bootstrap interval, resampling examples within each task (NaN slots dropped)."""
    gen = torch.Generator().manual_seed(seed)
    stacked = torch.stack([a.double() for a in arrays])  # [array, task, example]
    point = fn(*[float(np.nanmean(a.numpy(), axis=-1).mean()) for a in stacked])
    draws = torch.zeros(len(arrays), N_BOOT, dtype=torch.float64)
    for t in range(stacked.shape[1]):
        keep = ~stacked[:, t].isnan().any(0)
        x = stacked[:, t][:, keep]
        n = x.shape[-1]
        idx = torch.randint(0, n, (N_BOOT, n), generator=gen)
        draws += x[:, idx].mean(-1)
    draws /= stacked.shape[1]
    values = np.array([fn(*d) for d in draws.T.tolist()], dtype=float)
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def _mean(x: Tensor) -> tuple[float, float, float]:
    return _boot(lambda a: a, x)


def _diff(a: Tensor, b: Tensor) -> tuple[float, float, float]:
    return _boot(lambda x, y: x - y, a, b)


def _depth(layer: int, n_layers: int) -> float:
    return layer / (n_layers - 1)


def _heads(ranked: Sequence[Any], values: Tensor, n_layers: int) -> list[dict[str, Any]]:
    return [{"head": f"L{h.layer}H{h.head}", "layer": h.layer, "index": h.head, "value": float(values[h.layer, h.head]),
             "depth": round(_depth(h.layer, n_layers), 4)} for h in ranked]


def study_summary(study: str | Path | Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The headline numbers of one stored study (a folder, or :func:`~tlens_icl.workflows.load_study`'s dict).

    An unfinished study raises unless ``partial=True``: then only the sections whose steps have finished are
    summarized (``"complete"`` is False, ``"missing"`` names the others) and the cross-model table shows
    "not run" for the rest.
    """
    from scipy.stats import hypergeom, mannwhitneyu

    r = load_study(study) if isinstance(study, (str, Path)) else study
    doc = r["study"]
    if not doc.get("complete") and not partial:
        raise TlensICLError("This study has not finished (study.json has no 'complete'); run it again to resume, or "
                            "pass partial=True to summarize the steps it has finished.")

    def have(*steps: str) -> bool:
        return all(step in r for step in steps)

    ident = doc["identity"]
    S = StudySizes.from_json(ident["sizes"])
    L, H = int(ident["n_layers"]), int(ident["n_heads"])
    out: dict[str, Any] = {"model": ident["model"], "label": LABELS.get(ident["model"], ident["model"]), "n_layers": L,
                           "n_heads": H, "size_name": ident["size_name"], "sizes": ident["sizes"], "seed": ident["seed"],
                           "model_source": ident.get("model_source"), "machine": doc.get("machine"),
                           "seconds": round(sum(doc.get("seconds", {}).values()), 1), "tlens_icl": doc.get("tlens_icl"),
                           "warnings": sum(len(v) for v in doc.get("warnings", {}).values()),
                           "complete": bool(doc.get("complete"))}

    if have("accuracy"):
        acc = r["accuracy"]
        icl = [_mean(acc.correct[:, j]) for j in range(len(acc.n_shots))]
        out["icl"] = {"shots": list(acc.n_shots), "mean": [x[0] for x in icl], "lo": [x[1] for x in icl],
                      "hi": [x[2] for x in icl], "n": int(acc.correct.shape[-1]), "tasks": list(acc.tasks),
                      "per_task": {t: acc.correct[i].mean(-1).tolist() for i, t in enumerate(acc.tasks)}}

    if have("mediation"):
        med = r["mediation"]
        aie, (alo, ahi) = med.mean(), med.ci()
        top = med.top_heads(S.k)
        pos = aie.clamp(min=0)
        fv_heads = _heads(top, aie, L)
        for h, hl in zip(fv_heads, top):
            h["lo"], h["hi"] = float(alo[hl.layer, hl.head]), float(ahi[hl.layer, hl.head])
        out["aie"] = {"top": fv_heads, "ratio_1_2": fv_heads[0]["value"] / fv_heads[1]["value"] if fv_heads[1]["value"] > 0
                      else math.inf, "top_share": float(pos.flatten().sort(descending=True).values[:S.k].sum() / pos.sum()),
                      "clean_prob": float(med.clean_metric.nanmean()), "corrupted_prob": float(med.corrupted_metric.nanmean()),
                      "n_mean": S.n_mean, "n_corrupted": S.n_corrupted, "tasks": list(med.tasks), "n_shots": med.n_shots,
                      "per_task_top": {t: [f"L{h.layer}H{h.head}" for h in med.top_heads(3, task=t)] for t in med.tasks}}
    if have("head_scores", "mediation"):
        hs = r["head_scores"]
        ind = hs.mean("induction")
        ind_top = hs.top_heads(S.k, "induction")
        prev_top = hs.top_heads(S.k, "previous_token")
        out["induction"] = {"top": _heads(ind_top, ind, L), "prev_top": _heads(prev_top, hs.mean("previous_token"), L),
                            "n_seqs": int(hs.scores.shape[-1])}
        d_fv = [h["depth"] for h in fv_heads]
        d_ind = [h["depth"] for h in out["induction"]["top"]]
        n_total = L * H
        shared = sorted({h["head"] for h in fv_heads} & {h["head"] for h in out["induction"]["top"]})
        out["depth"] = {"fv_mean": float(np.mean(d_fv)), "fv_min": min(d_fv), "fv_max": max(d_fv),
                        "induction_mean": float(np.mean(d_ind)), "induction_min": min(d_ind), "induction_max": max(d_ind),
                        "mannwhitney_p": float(mannwhitneyu(d_ind, d_fv, alternative="two-sided").pvalue),
                        "shared": shared, "shared_expected": S.k * S.k / n_total,
                        "shared_p": float(hypergeom.sf(len(shared) - 1, n_total, S.k, S.k))}

    if have(*[f"fv_{k}/{t}" for k in ("val", "test") for t in S.fv_tasks]):
        layers = list(r[f"fv_val/{S.fv_tasks[0]}"].layers)
        val = torch.stack([r[f"fv_val/{t}"].accuracy() for t in S.fv_tasks]).mean(0)  # [setting, layer]
        fv_layer = int(doc["fv_layer"]) if "fv_layer" in doc else chosen_layer(r, S, "fv")  # unfinished: as run_study
        settings = list(r[f"fv_test/{S.fv_tasks[0]}"].settings)
        fv: dict[str, Any] = {"layer": fv_layer, "depth": _depth(fv_layer, L), "layers": layers, "settings": settings,
                              "val_curve": val.tolist(), "n_val": S.n_val, "n_test": S.n_test}
        for i, s in enumerate(settings):
            with_fv = torch.stack([r[f"fv_test/{t}"].correct[i, 0] for t in S.fv_tasks])
            without = torch.stack([r[f"fv_test/{t}"].baseline_correct[i] for t in S.fv_tasks])
            fv[s] = {"without": _mean(without), "with": _mean(with_fv), "lift": _diff(with_fv, without),
                     "per_task": {t: (float(without[j].mean()), float(with_fv[j].mean())) for j, t in enumerate(S.fv_tasks)}}
        out["fv"] = fv

    if have(*[f"tv_{k}/{t}" for k in ("val", "test") for t in S.fv_tasks], "tv_icl"):
        tv_val = torch.stack([r[f"tv_val/{t}"].accuracy()[0] for t in S.fv_tasks]).mean(0)
        tv_layer = int(doc["tv_layer"]) if "tv_layer" in doc else chosen_layer(r, S, "tv")
        tv_acc = torch.stack([r[f"tv_test/{t}"].correct[0, 0] for t in S.fv_tasks])
        zero = torch.stack([r[f"tv_test/{t}"].baseline_correct[0] for t in S.fv_tasks])
        ticl = r["tv_icl"]
        icl5 = ticl.correct[:, list(ticl.n_shots).index(S.tv_shots)]
        out["tv"] = {"layer": tv_layer, "depth": _depth(tv_layer, L), "val_curve": tv_val.tolist(), "zero_shot": _mean(zero),
                     "tv": _mean(tv_acc), "icl": _mean(icl5), "ratio": _boot(lambda a, b: a / b if b > 0 else math.nan,
                                                                              tv_acc, icl5),
                     "shots": S.tv_shots, "n_test": S.n_test}

    if have("decodability", "accuracy"):
        cd = r["decodability"]
        sc, (clo, chi) = cd.scores(), cd.ci()
        peaks = []
        for j, s in enumerate(cd.n_shots):
            u = first_argmax(sc[j])
            peaks.append({"shots": s, "layer": int(cd.units[u][0]), "cd": float(sc[j, u]), "lo": float(clo[j, u]),
                          "hi": float(chi[j, u]), "shuffled": float(cd.shuffled[j].mean()), "chance": float(cd.chance[j])})
        corr = cd.correlate(acc)
        b = first_argmax(torch.tensor(corr["r"].values).nan_to_num(-2.0))
        out["cd"] = {"peaks": peaks, "curves": sc.tolist(), "shuffled": cd.shuffled.tolist(), "n_shots": list(cd.n_shots),
                     "n": int(cd.correct.shape[-1]) // len(S.cd_tasks), "tasks": list(S.cd_tasks),
                     "corr_layer": int(corr["layer"].iloc[b]), "corr_r": float(corr["r"].iloc[b]),
                     "corr_p": float(corr["p"].iloc[b]), "corr_p_bonferroni": min(1.0, float(corr["p"].iloc[b]) * len(corr)),
                     "corr_cells": int(corr["n_cells"].iloc[b])}

    if have("rsa"):
        rs = r["rsa"]
        k = list(rs.hypotheses).index("task")
        rsa_peaks = []
        for j, s in enumerate(rs.n_shots):
            u = first_argmax(rs.rho[j, k])
            rsa_peaks.append({"shots": s, "layer": int(rs.units[u][0]), "rho": float(rs.rho[j, k, u]),
                              "p": float(rs.p[j, k, u])})
        out["rsa"] = {"peaks": rsa_peaks, "curves": rs.rho[:, k].tolist(), "n_shots": list(rs.n_shots)}

    if have("attention", "attention_accuracy", "mediation"):
        ar, aacc = r["attention"], r["attention_accuracy"]
        before, after = ar.condition_names[0], ar.condition_names[-1]
        pb = ar.per_prompt(before, per_token=True).flatten(1).nanmean(1)
        pa = ar.per_prompt(after, per_token=True).flatten(1).nanmean(1)
        h0 = top[0]
        tb = ar.per_prompt(before, per_token=True)[:, h0.layer, h0.head]
        ta = ar.per_prompt(after, per_token=True)[:, h0.layer, h0.head]
        out["attention"] = {"before": before, "after": after, "share_before": _mean(pb[None]), "share_after": _mean(pa[None]),
                            "change": _diff(pa[None], pb[None]), "top_head": f"L{h0.layer}H{h0.head}",
                            "top_change": _diff(ta[None], tb[None]), "n": int(pb.numel()),
                            "accuracy": [_mean(aacc.correct[:, j]) for j in range(len(aacc.n_shots))],
                            "accuracy_shots": list(aacc.n_shots)}

    if have("ablation"):
        ab = r["ablation"]
        abl: dict[str, Any] = {"ks": list(ab.ks), "fractions": [0.0, *S.ablation_ks], "methods": list(ab.methods),
                               "n": int(ab.correct.shape[-1]), "tasks": len(ab.tasks), "n_shots": ab.n_shots}
        for m in ab.methods:
            mean, lo, hi, _ = ab.accuracy(m)
            abl[m] = {"mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
        fi, ii = ab.methods.index("FV"), ab.methods.index("induction")
        abl["fv_minus_induction"] = [_diff(ab.correct[fi, j, 0], ab.correct[ii, j, 0]) for j in range(len(ab.ks))]
        abl["zero_shot"] = out["fv"]["zero_shot"]["without"] if "zero_shot" in out.get("fv", {}) else None
        out["ablation"] = abl
    out["missing"] = [k for k in ("icl", "aie", "induction", "fv", "tv", "cd", "rsa", "attention", "ablation") if k not in out]
    return out


# ---- the cross-model table ---------------------------------------------------------------------------------
def _ci(x: Sequence[float], digits: int = 2) -> str:
    return f"{x[0]:.{digits}f} [{x[1]:.{digits}f}, {x[2]:.{digits}f}]"


def _separates(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 if interval ``a`` lies above ``b``, -1 below, 0 if they overlap."""
    return 1 if a[1] > b[2] else -1 if a[2] < b[1] else 0


def _sign(x: Sequence[float]) -> int:
    """+1 if the interval of ``x`` lies above 0, -1 below, 0 if it contains 0."""
    return 1 if x[1] > 0 else -1 if x[2] < 0 else 0


@dataclasses.dataclass(frozen=True)
class Finding:
    """One row of the cross-model table: the paper's claim, how a summary is shown, and the verdict rule."""

    claim: str
    paper: str
    cell: Callable[[dict[str, Any]], str]
    verdict: Callable[[dict[str, Any]], str]
    rule: str


def _icl_cell(s: dict[str, Any]) -> str:
    i = s["icl"]
    return (f"{' / '.join(f'{m:.2f}' for m in i['mean'])} at {' / '.join(map(str, i['shots']))} shots; "
            f"{i['shots'][-1]}-shot {_ci((i['mean'][-1], i['lo'][-1], i['hi'][-1]))} ({len(i['tasks'])} tasks, n = {i['n']})")


def _icl_verdict(s: dict[str, Any]) -> str:
    i = s["icl"]
    return {1: "yes", 0: "undecided", -1: "no"}[_separates((i["mean"][-1], i["lo"][-1], i["hi"][-1]),
                                                              (i["mean"][0], i["lo"][0], i["hi"][0]))]


def _heads_cell(s: dict[str, Any]) -> str:
    a = s["aie"]
    t = a["top"]
    return (f"{t[0]['head']} {_ci((t[0]['value'], t[0]['lo'], t[0]['hi']), 3)}, {a['ratio_1_2']:.1f}x the next "
            f"({t[1]['head']} {t[1]['value']:.3f}); top-{len(t)} hold {a['top_share']:.0%} of positive AIE")


def _heads_verdict(s: dict[str, Any]) -> str:
    t = s["aie"]["top"][0]
    if t["lo"] <= 0:
        return "undecided"
    return "yes" if s["aie"]["top_share"] >= 0.5 else "partly"


def _depth_cell(s: dict[str, Any]) -> str:
    d = s["depth"]
    return f"mean {d['fv_mean']:.2f} (range {d['fv_min']:.2f}-{d['fv_max']:.2f})"


def _band(x: float, lo: float, hi: float) -> str:
    return "yes" if lo <= x <= hi else ("no: later" if x > hi else "no: earlier")


def _ind_cell(s: dict[str, Any]) -> str:
    d = s["depth"]
    return (f"induction {d['induction_mean']:.2f} vs FV {d['fv_mean']:.2f} (Mann-Whitney p = {d['mannwhitney_p']:.2g}); "
            f"top induction {s['induction']['top'][0]['head']} {s['induction']['top'][0]['value']:.2f}")


def _ind_verdict(s: dict[str, Any]) -> str:
    d = s["depth"]
    if d["mannwhitney_p"] >= 0.05:
        return "undecided"
    return "yes" if d["induction_mean"] < d["fv_mean"] else "no"


def _overlap_cell(s: dict[str, Any]) -> str:
    d = s["depth"]
    k = len(s["aie"]["top"])
    return f"top-{k} share {len(d['shared'])} (chance {d['shared_expected']:.2f}, p = {d['shared_p']:.2g})"


def _overlap_verdict(s: dict[str, Any]) -> str:
    d = s["depth"]
    k = len(s["aie"]["top"])
    if len(d["shared"]) <= k // 5:
        return "yes" if d["shared_p"] >= 0.05 else "partly"
    return "no"


def _fv_layer_cell(s: dict[str, Any]) -> str:
    return f"layer {s['fv']['layer']} of {s['n_layers']} (depth {s['fv']['depth']:.2f})"


def _lift_cell(setting: str) -> Callable[[dict[str, Any]], str]:
    def cell(s: dict[str, Any]) -> str:
        f = s["fv"][setting]
        return (f"{f['without'][0]:.2f} -> {f['with'][0]:.2f}, lift {_ci(f['lift'])} "
                f"({len(f['per_task'])} tasks, n = {s['fv']['n_test']})")
    return cell


def _lift_verdict(setting: str) -> Callable[[dict[str, Any]], str]:
    return lambda s: {1: "yes", 0: "undecided", -1: "no"}[_sign(s["fv"][setting]["lift"])]


def _tv_layer_cell(s: dict[str, Any]) -> str:
    return f"layer {s['tv']['layer']} of {s['n_layers']} (depth {s['tv']['depth']:.2f})"


def _tv_cell(s: dict[str, Any]) -> str:
    t = s["tv"]
    return (f"zero-shot {t['zero_shot'][0]:.2f}, TV {t['tv'][0]:.2f}, {t['shots']}-shot ICL {t['icl'][0]:.2f}; "
            f"TV/ICL {_ci(t['ratio'])}")


def _tv_verdict(s: dict[str, Any]) -> str:
    t = s["tv"]
    if _separates(t["tv"], t["zero_shot"]) <= 0:  # the TV does not beat zero-shot beyond the intervals
        return "undecided" if t["tv"][0] > t["zero_shot"][0] else "no"
    return "yes" if t["ratio"][1] >= 0.5 else "partly"


def _cd_cell(s: dict[str, Any]) -> str:
    c = s["cd"]
    first, last = c["peaks"][0], c["peaks"][-1]
    return (f"peak {first['cd']:.2f} -> {_ci((last['cd'], last['lo'], last['hi']))} ({first['shots']} -> {last['shots']} "
            f"shots, L{last['layer']}); shuffled control {first['shuffled']:.2f} -> {last['shuffled']:.2f}; "
            f"chance {last['chance']:.2f}")


def _cd_verdict(s: dict[str, Any]) -> str:
    first, last = s["cd"]["peaks"][0], s["cd"]["peaks"][-1]
    return {1: "yes", 0: "undecided", -1: "no"}[_separates((last["cd"], last["lo"], last["hi"]),
                                                              (first["cd"], first["lo"], first["hi"]))]


def _corr_cell(s: dict[str, Any]) -> str:
    c = s["cd"]
    return (f"Spearman r = {c['corr_r']:.2f} at L{c['corr_layer']} (p = {c['corr_p']:.2g}, Bonferroni over layers "
            f"{c['corr_p_bonferroni']:.2g}; {c['corr_cells']} task x shot cells)")


def _corr_verdict(s: dict[str, Any]) -> str:
    c = s["cd"]
    if c["corr_p_bonferroni"] >= 0.05:
        return "undecided"
    return "yes" if c["corr_r"] > 0 else "no"


def _rsa_cell(s: dict[str, Any]) -> str:
    p = s["rsa"]["peaks"]
    rhos = " / ".join(f"{x['rho']:.2f}".replace("-0.00", "0.00") for x in p)  # no negative zero
    shots = " / ".join(str(x["shots"]) for x in p)
    return (f"max rho {rhos} at {shots} shots "
            f"(peak L{p[-1]['layer']}, permutation p = {p[-1]['p']:.2g})")


def _rsa_verdict(s: dict[str, Any]) -> str:
    p = s["rsa"]["peaks"]
    if p[-1]["p"] >= 0.05:
        return "undecided"
    return "yes" if p[-1]["rho"] > p[0]["rho"] else "no"


def _att_cell(s: dict[str, Any]) -> str:
    a = s.get("attention")
    if a is None:
        if not s.get("complete", True):
            raise KeyError("attention")  # an unfinished study: "not run" (cross_model_table)
        return "not measured"
    acc = " -> ".join(f"{x[0]:.2f}" for x in a["accuracy"])
    return (f"exact match {acc} ({a['before']} -> {a['after']}); relevant share per token (mean of heads) "
            f"{a['share_before'][0]:.3f} -> {a['share_after'][0]:.3f}, change {_ci(a['change'], 3)} (n = {a['n']})")


def _att_verdict(s: dict[str, Any]) -> str:
    a = s.get("attention")
    return "undecided" if a is None else {1: "yes", 0: "undecided", -1: "no"}[_sign(a["change"])]


def _abl_cell(s: dict[str, Any]) -> str:
    a = s["ablation"]
    parts = []
    for j in range(1, len(a["ks"])):
        parts.append(f"k={a['ks'][j]}: FV {a['FV']['mean'][j]:.2f} vs ind. {a['induction']['mean'][j]:.2f} "
                     f"(diff {_ci(a['fv_minus_induction'][j])})")
    return f"unablated {a['FV']['mean'][0]:.2f}; " + "; ".join(parts[:2])


def _abl_verdict(s: dict[str, Any]) -> str:
    a = s["ablation"]
    signs = [_sign(a["fv_minus_induction"][j]) for j in (1, 2)]  # the two smallest k (2 % and 5 % of heads)
    if signs == [-1, -1]:
        return "yes"
    if -1 in signs:
        return "no" if 1 in signs else "partly"
    return "no" if 1 in signs else "undecided"


def _crosbie_cell(s: dict[str, Any]) -> str:
    a = s["ablation"]
    z = a["zero_shot"]
    return (f"{a['ks'][1]} / {a['ks'][2]} induction heads: {_ci((a['induction']['mean'][1], a['induction']['lo'][1], a['induction']['hi'][1]))}"
            f" / {a['induction']['mean'][2]:.2f}; zero-shot {z[0]:.2f}; random {a['random']['mean'][2]:.2f}")


def _crosbie_verdict(s: dict[str, Any]) -> str:
    a = s["ablation"]
    lo = a["induction"]["lo"][2]
    z = a["zero_shot"]
    return "no" if lo > z[2] else "yes" if a["induction"]["mean"][2] <= z[2] else "partly"


FINDINGS: tuple[Finding, ...] = (
    Finding("ICL rises with shots (Todd et al. 2024)", "yes", _icl_cell, _icl_verdict,
            "yes when the last shot count's interval lies above 0 shots'"),
    Finding("a few heads carry the task: universal FV heads (Todd et al.)", "GPT-J top-10 AIE 0.011-0.059",
            _heads_cell, _heads_verdict, "yes when the top head's interval excludes 0 and the top-k hold >= 50 % of "
                                         "the positive AIE mass; partly below 50 %"),
    Finding("FV heads sit in the middle layers (Todd et al.)", "GPT-J layers 8-15 of 28: depth 0.30-0.56", _depth_cell,
            lambda s: _band(s["depth"]["fv_mean"], 0.30, 0.56), "yes when the top-k's mean depth lies in 0.30-0.56"),
    Finding("induction heads sit earlier than FV heads (Yin & Steinhardt 2025)", "yes (12 models, 70M-7B)", _ind_cell,
            _ind_verdict, "Mann-Whitney test of the two top-k sets' depths; undecided when p >= 0.05"),
    Finding("FV heads and induction heads are mostly different heads (Yin & Steinhardt)", "little overlap",
            _overlap_cell, _overlap_verdict, "yes when at most k/5 heads are shared; partly if still above chance"),
    Finding("the FV works best at about L/3 (Todd et al.)", "GPT-J layer 9 of 28: depth 0.33", _fv_layer_cell,
            lambda s: _band(s["fv"]["depth"], 0.2, 0.45), "layer chosen on validation items; yes within depth 0.20-0.45"),
    Finding("an FV lifts shuffled-label accuracy (Todd et al.)", "GPT-J 0.39 -> 0.91", _lift_cell("shuffled_labels"),
            _lift_verdict("shuffled_labels"), "test items; yes when the paired lift's interval lies above 0"),
    Finding("an FV lifts zero-shot accuracy (Todd et al.)", "GPT-J large gains", _lift_cell("zero_shot"),
            _lift_verdict("zero_shot"), "test items; yes when the paired lift's interval lies above 0"),
    Finding("the TV layer sits at about half depth (Hendel et al. 2023)", "GPT-J 13 of 28: depth 0.48", _tv_layer_cell,
            lambda s: _band(s["tv"]["depth"], 0.35, 0.6), "layer chosen on validation items; yes within depth 0.35-0.60"),
    Finding("a TV recovers most of ICL (Hendel et al.)", "0.13 / 0.74 / 0.84: TV/ICL 0.88", _tv_cell, _tv_verdict,
            "yes when TV beats zero-shot (intervals apart) and the TV/ICL interval lies above 0.5; partly otherwise"),
    Finding("concept decodability rises with shots (Han et al. 2024)", "rises", _cd_cell, _cd_verdict,
            "peak over layers; yes when the last shot count's interval lies above 0 shots'"),
    Finding("decodability predicts ICL accuracy (Han et al.)", "positive", _corr_cell, _corr_verdict,
            "best layer's Spearman r; undecided unless Bonferroni-corrected p < 0.05"),
    Finding("RSA with the task rises after ICL (Yousefi et al. 2023)", "rises", _rsa_cell, _rsa_verdict,
            "yes when the last shot count's peak rho exceeds 0 shots' with permutation p < 0.05"),
    Finding("attention shifts to the relevant text after ICL (Yousefi et al.)", "ratio rises", _att_cell, _att_verdict,
            "yes when the paired change's interval lies above 0, no below, else undecided"),
    Finding("ablating FV heads hurts few-shot accuracy more than induction heads (Yin & Steinhardt)",
            "yes, growing with size", _abl_cell, _abl_verdict,
            "paired FV - induction accuracy at the two smallest k; yes when both intervals lie below 0"),
    Finding("ablating a few induction heads brings accuracy near zero-shot (Crosbie & Shutova 2024)",
            "Llama-3-8B: yes", _crosbie_cell, _crosbie_verdict,
            "no when accuracy with the second-smallest k ablated stays above zero-shot's interval"),
)


def _combine(verdicts: Mapping[str, str], n_models: int) -> str:
    kinds = sorted(set(verdicts.values()))
    if not kinds:
        return "not run"
    if len(kinds) == 1:
        return kinds[0] + (" (all)" if len(verdicts) > 1 and len(verdicts) == n_models else "")
    return "; ".join(f"{v}: {', '.join(m for m, x in verdicts.items() if x == v)}" for v in kinds)


def cross_model_table(summaries: Sequence[dict[str, Any]]) -> Any:
    """One row per :data:`FINDINGS` entry: the paper, each model's numbers, and the verdicts (a DataFrame).

    A partial summary (``study_summary(..., partial=True)``) shows "not run" where its steps are missing; its
    verdict is then left out of the row's ``agrees?``."""
    import pandas as pd

    rows = []
    for f in FINDINGS:
        row = {"finding": f.claim, "paper": f.paper}
        verdicts = {}
        for s in summaries:
            try:
                row[s["label"]], verdicts[s["label"]] = f.cell(s), f.verdict(s)
            except KeyError:  # a section an unfinished study does not have (a finished one always has them all)
                if s.get("complete", True):
                    raise
                row[s["label"]] = "not run (the study has not finished this step)"
        row["agrees?"] = _combine(verdicts, len(summaries))
        rows.append(row)
    return pd.DataFrame(rows)


def table_markdown(df: Any) -> str:
    """The table as GitHub markdown (``|`` in cells escaped)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


def cross_model_figures(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The cross-model figures from study summaries (smallest model first): ``head_depths``, ``ablation``,
    ``fv_lift``, ``layers`` and ``shots`` (matplotlib figures). A partial summary appears only in the figures
    whose steps it has finished (a figure no summary can fill is left out)."""
    from tlens_icl.viz import study as V

    def having(*keys: str) -> list[dict[str, Any]]:
        return [s for s in summaries if all(k in s for k in keys)]

    def sizes(group: Sequence[dict[str, Any]]) -> str:
        return "; ".join(f"{s['label']}: {s['size_name']} sizes" for s in group)

    figs: dict[str, Any] = {}
    group = having("aie", "induction")
    if group:
        k, n_fv = len(group[0]["aie"]["top"]), len(group[0]["aie"]["tasks"])
        figs["head_depths"] = V.head_depths(
            {s["label"]: [h["depth"] for h in s["aie"]["top"]] for s in group},
            {s["label"]: [h["depth"] for h in s["induction"]["top"]] for s in group}, k=k,
            subtitle=f"FV heads: top-{k} by AIE (Todd et al.'s scan, {n_fv} tasks); induction heads: top-{k} by "
                     f"induction score on repeated random tokens. {sizes(group)}")
    group = having("ablation", "aie")
    if group:
        first, n_fv = group[0], len(group[0]["aie"]["tasks"])
        figs["ablation"] = V.ablation_panels(
            {s["label"]: {m: list(zip(s["ablation"][m]["mean"], s["ablation"][m]["lo"], s["ablation"][m]["hi"]))
                          for m in s["ablation"]["methods"]} for s in group},
            first["ablation"]["fractions"], {s["label"]: s["ablation"]["zero_shot"] for s in group},
            subtitle=f"heads mean-ablated at the query, excluding the other ranking's top 2 %; "
                     f"{first['ablation']['n_shots']}-shot, {n_fv} tasks; n per task: "
                     + ", ".join(f"{s['label']} {s['ablation']['n']}" for s in group))
    group = having("fv", "aie")
    if group:
        k, n_fv = len(group[0]["aie"]["top"]), len(group[0]["aie"]["tasks"])
        figs["fv_lift"] = V.lift_bars(
            {s["label"]: {st: (s["fv"][st]["without"], s["fv"][st]["with"]) for st in s["fv"]["settings"]}
             for s in group},
            subtitle=f"FV of the top-{k} heads at the layer chosen on validation items; mean over {n_fv} tasks of "
                     "held-out test items; n per task: " + ", ".join(f"{s['label']} {s['fv']['n_test']}" for s in group))
    group = having("fv", "tv", "aie")
    if group:
        n_fv = len(group[0]["aie"]["tasks"])
        figs["layers"] = V.layer_curves(
            {s["label"]: {"function vector": [sum(c) / len(c) for c in zip(*s["fv"]["val_curve"])],
                          "task vector": s["tv"]["val_curve"]} for s in group},
            {s["label"]: {"function vector": s["fv"]["layer"], "task vector": s["tv"]["layer"]} for s in group},
            {s["label"]: s["n_layers"] for s in group}, refs={"function vector": 9 / 27, "task vector": 13 / 27},
            subtitle=f"mean over {n_fv} tasks (FV: zero-shot and shuffled-label prompts); papers: Todd et al. GPT-J "
                     "layer 9/28, Hendel et al. GPT-J layer 13/28")
    group = having("icl", "cd", "rsa")
    if group:
        n_icl, n_cd, shots = len(group[0]["icl"]["tasks"]), len(group[0]["cd"]["tasks"]), group[0]["icl"]["shots"]
        figs["shots"] = V.shot_curves(
            {"ICL accuracy": {s["label"]: list(zip(s["icl"]["mean"], s["icl"]["lo"], s["icl"]["hi"])) for s in group},
             "concept decodability (peak layer)": {s["label"]: [(p["cd"], p["lo"], p["hi"]) for p in s["cd"]["peaks"]]
                                                   for s in group},
             "RSA with the task (peak layer)": {s["label"]: [(p["rho"], p["rho"], p["rho"]) for p in s["rsa"]["peaks"]]
                                               for s in group}},
            shots, {"concept decodability (peak layer)": {s["label"]: [p["shuffled"] for p in s["cd"]["peaks"]]
                                                          for s in group}},
            {"ICL accuracy": "exact match (mean of tasks)", "concept decodability (peak layer)": "kNN accuracy",
             "RSA with the task (peak layer)": "Spearman rho"},
            subtitle=f"ICL: {n_icl} tasks; CD and RSA: {n_cd} tasks sharing one word pool, the same prompts; n per cell: "
                     + ", ".join(f"{s['label']} {s['icl']['n']}" for s in group))
    return figs


#: Steps shown in a study's report (a section each, with the result's own figure and table).
REPORT_STEPS = (("accuracy", "ICL accuracy by shots"), ("mediation", "Todd et al.'s scan: AIE of every head"),
                ("head_scores", "Induction and previous-token heads"), ("ablation", "Ablation with exclusion"),
                ("decodability", "Concept decodability"), ("rsa", "RSA with the task hypothesis"),
                ("attention", "Attention ratio on reading comprehension"))


def write_study_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """``index.html`` for one stored study (default ``folder/report``): the findings beside the papers, the
    cross-model figures for this model, and each step's own figure and table. Recomputes nothing."""
    import matplotlib.pyplot as plt

    from tlens_icl.results.report import table_section, write_index
    from tlens_icl.viz.report import ReportFigure

    folder = Path(folder)
    out = Path(out) if out is not None else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    r = load_study(folder)
    s = study_summary(r)

    def figure(fig: Any, name: str, caption: str) -> ReportFigure:
        fig.savefig(out / f"{name}.png", dpi=130)
        plt.close(fig)
        return ReportFigure((out / f"{name}.png").read_bytes(), caption, f"{name}.png")

    table = cross_model_table([s])
    rules = {f.claim: f.rule for f in FINDINGS}
    table["verdict rule"] = [rules[c] for c in table["finding"]]
    figs = [figure(f, f"study_{n}", n.replace("_", " ")) for n, f in cross_model_figures([s]).items()]
    table.to_csv(out / "findings.csv", index=False)
    sections = [table_section("Findings beside the papers", {"": table}, figures=figs, files=["findings.csv"],
                              text=f"{s['label']}: {s['size_name']} sizes, seed {s['seed']}; {s['seconds']:.0f} s of "
                                   f"computation on {s['machine'].get('cpu', '?')} ({s['warnings']} warnings recorded "
                                   "in study.json).")]
    for step, heading in REPORT_STEPS:
        if step not in r:
            continue
        res = r[step]
        sections.append(table_section(heading, {"": res.display_table()}, text=res.summary(),
                                      figures=[figure(res.plot(), step, heading)]))
    settings = {"model": s["model"], "sizes": s["size_name"], "seed": s["seed"],
                "tlens_icl": s["tlens_icl"], **{k: v for k, v in (s["model_source"] or {}).items() if k != "packages"}}
    return write_index(out, title=f"tlens-icl study: {s['label']}", sections=sections, settings=settings,
                       subtitle="the papers' measurements at their sizes (tlens_icl.workflows)")


def provenance_markdown(summaries: Sequence[dict[str, Any]]) -> str:
    """How each stored study was made: the command, sizes, library versions, machine and time (a markdown table)."""
    lines = ["| model | command | sizes | tlens_icl | machine | threads | time |", "|---|---|---|---|---|---|---|"]
    for s in summaries:
        m = s.get("machine") or {}
        cmd = f"`tlens-icl study {s['model']} --sizes {s['size_name']} --out studies/cross_model/{s['model']}`"
        lines.append(f"| {s['label']} | {cmd} | {s['size_name']} | {s['tlens_icl']} | {m.get('cpu', '?')}, "
                     f"{m.get('cores', '?')} cores | {m.get('torch_threads', '?')} | {s['seconds'] / 60:.0f} min |")
    return "\n".join(lines)
