"""The cross-model study: the papers' measurements on one model at their sizes, stored, resumable.

``run_study(model, out)`` (``tlens-icl study MODEL --out DIR``) runs, in order, each step writing one saved
result under ``out/<step>`` the moment it finishes (a re-run loads finished steps; the two long ones, the
ICL curves and Todd et al.'s scan, also keep finer units in ``out/.partial`` until they finish):

========================  ====================================================================================
step                      what (sizes of :data:`PAPER`; the papers' protocol)
========================  ====================================================================================
``accuracy``              ICL exact match, 10 tasks x 0/1/5/10 shots, n = 50 queries per cell (Todd et al.)
``mediation``             Todd et al.'s scan: AIE of every head, 6 tasks, 100 mean / 25 shuffled-label prompts,
                          10 shots, on each task's *train* items (single-token answers)
``fv_val/T``, ``fv_test/T``  function vector of the top-10 heads (task T's mean activations), added after every
                          layer on validation items; the layer chosen there is scored on separate test items,
                          zero-shot and with shuffled labels (10 shots, demonstrations from train)
``tv_val/T``, ``tv_test/T``  Hendel et al.'s task vector (train prompts, 5 shots), layer chosen on validation
                          items, scored on test items; ``tv_icl`` the 5-shot ICL accuracy on those test items
``decodability``, ``rsa``  Han et al.'s concept decodability and Yousefi et al.'s RSA on the query residuals of
                          5 tasks that share one word pool, 0/1/5/10 shots, n = 50 (the accuracy step's prompts)
``head_scores``           induction / previous-token scores on repeated random tokens (Olsson et al.)
``ablation``              Yin & Steinhardt's mean ablation with exclusion at the query: top-k FV vs induction
                          heads vs 3 random seeds, k = 2/5/10/20 % of heads, on the test items
``attention``             Yousefi et al.'s attention ratio on reading comprehension (0 vs 2 shots)
========================  ====================================================================================

``study.json`` records the protocol, the model (name, provenance), the library version, the machine and each
step's seconds. :func:`~tlens_icl.workflows.summary.study_summary` reads a study folder and computes every headline
number with its interval (recomputing nothing); :func:`~tlens_icl.workflows.summary.cross_model_table` puts several
models beside the papers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tlens_icl._typing import ModelLike
from tlens_icl._validate import checked
from tlens_icl.analyses.accuracy import AccuracyResult, icl_accuracy
from tlens_icl.analyses.causal.mediation import IndirectEffectResult, indirect_effect
from tlens_icl.analyses.heads.ablation import HeadAblationResult, head_ablation
from tlens_icl.analyses.heads.scores import HeadScoresResult, head_scores
from tlens_icl.analyses.representations.activations import task_activations
from tlens_icl.analyses.representations.attention_ratio import AttentionRatioResult, attention_ratio
from tlens_icl.analyses.representations.decodability import DecodabilityResult, concept_decodability
from tlens_icl.analyses.representations.rsa import RSAResult, rsa
from tlens_icl.analyses.vectors.common import LayerSweepResult
from tlens_icl.analyses.vectors.function_vectors import function_vector_from_heads, function_vector_sweep
from tlens_icl.analyses.vectors.task_vectors import task_vector, task_vector_sweep
from tlens_icl.errors import CheckpointMismatchError, ResultFileError, TlensICLError
from tlens_icl.prompts.pairs import make_prompts, usable_task
from tlens_icl.results.base import Result, run_info

STUDY_FILE = "study.json"
PARTIAL = ".partial"
#: Version of the study folder layout; a folder of another version is refused.
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class StudySizes:
    """The study's protocol: tasks and sizes of every step (see the module docstring)."""

    icl_tasks: tuple[str, ...] = ("uppercase", "capitalize", "first_letter", "last_letter", "word_length", "antonym",
                                  "english_french", "landmark_country", "present_past", "singular_plural")
    icl_shots: tuple[int, ...] = (0, 1, 5, 10)
    n_icl: int = 50
    fv_tasks: tuple[str, ...] = ("antonym", "capitalize", "english_french", "landmark_country", "present_past",
                                 "singular_plural")
    n_mean: int = 100
    n_corrupted: int = 25
    n_shots: int = 10
    k: int = 10
    n_val: int = 30
    n_test: int = 50
    n_tv: int = 32
    tv_shots: int = 5
    cd_tasks: tuple[str, ...] = ("uppercase", "capitalize", "first_letter", "last_letter", "word_length")
    n_head_seqs: int = 32
    head_seq_length: int = 25
    ablation_ks: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    ablation_exclude: float = 0.02
    n_random: int = 3
    n_ablation: int = 40
    #: the attention-ratio task (its prompts mark relevant text and distractors); None skips the two attention steps
    attention_task: str | None = "reading_comprehension"
    n_rc: int = 64
    rc_shots: int = 2
    rsa_permutations: int = 200
    #: fractions of each task's single-token items: train (mean activations, demonstrations, vectors), validation
    #: (choosing a layer); the rest is the test split (every reported vector number).
    train_fraction: float = 0.5
    val_fraction: float = 0.15

    def __post_init__(self) -> None:
        missing = [t for t in self.cd_tasks if t not in self.icl_tasks]
        if missing:
            raise TlensICLError(f"cd_tasks must be among icl_tasks (decodability is correlated with their ICL "
                                f"accuracy on the same prompts); missing {missing}.")
        for name in ("n_icl", "n_mean", "n_corrupted", "n_shots", "k", "n_val", "n_test", "n_tv", "tv_shots",
                     "n_head_seqs", "n_random", "n_ablation", "n_rc", "rc_shots"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TlensICLError(f"StudySizes.{name} must be an int >= 1, got {v!r}.")
        if not 0 < self.train_fraction < 1 or not 0 < self.val_fraction < 1 - self.train_fraction:
            raise TlensICLError("train_fraction and val_fraction must leave a test split: 0 < val < 1 - train < 1.")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StudySizes:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(doc) - fields
        if unknown:
            raise ResultFileError(f"Unknown study sizes {sorted(unknown)}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})


#: The papers' sizes (Todd et al.: 100 mean / 25 corrupted prompts, 10 shots; n >= 50 per accuracy cell; >= 40
#: prompts per task and shot count for decodability and RSA).
PAPER = StudySizes()
#: Sizes for a 1.5B model on 2 CPU cores (about half the papers' sizes everywhere; every number says its n).
REDUCED = dataclasses.replace(PAPER, n_icl=30, n_mean=50, n_corrupted=20, n_val=16, n_test=30, n_tv=16, n_ablation=20,
                              n_rc=32, n_head_seqs=16)
#: Seconds-sized protocol for tests and a first look (every step runs, numbers are noise).
SMOKE = StudySizes(icl_tasks=("capitalize", "first_letter", "uppercase"), icl_shots=(0, 2), n_icl=3,
                   fv_tasks=("capitalize", "present_past"), n_mean=3, n_corrupted=2, n_shots=2, k=3, n_val=2, n_test=3,
                   n_tv=2, tv_shots=2, cd_tasks=("capitalize", "first_letter", "uppercase"), n_head_seqs=2,
                   head_seq_length=6, ablation_ks=(0.1, 0.25), n_random=2, n_ablation=3, n_rc=2, rc_shots=1,
                   rsa_permutations=10, train_fraction=0.5, val_fraction=0.2)
SIZES = {"paper": PAPER, "reduced": REDUCED, "smoke": SMOKE}

#: The result class of every step (for loading); a step name ``fv_val/T`` uses the class of ``fv_val``.
STEP_TYPES: dict[str, type[Result]] = {
    "accuracy": AccuracyResult, "mediation": IndirectEffectResult, "fv_val": LayerSweepResult,
    "fv_test": LayerSweepResult, "tv_val": LayerSweepResult, "tv_test": LayerSweepResult, "tv_icl": AccuracyResult,
    "decodability": DecodabilityResult, "rsa": RSAResult, "head_scores": HeadScoresResult,
    "ablation": HeadAblationResult, "attention": AttentionRatioResult, "attention_accuracy": AccuracyResult,
}


def first_argmax(values: Sequence[float] | Tensor, *, tol: float = 1e-6) -> int:
    """Index of the largest value; values within ``tol`` of it tie and the first (lowest index) wins, so the
    choice does not depend on float rounding (CPUs differ in the last bits)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() == 0 or bool(v.isnan().all()):
        raise TlensICLError("first_argmax needs at least one finite value.")
    best = float(v.nan_to_num(-math.inf).max())
    return int(torch.nonzero(v >= best - tol)[0])


class _Steps:
    """The study folder: ``study.json`` (the protocol and timings) and one saved result per finished step."""

    def __init__(self, out: Path, identity: dict[str, Any]) -> None:
        self.out, self.identity = out, identity
        path = out / STUDY_FILE
        if path.is_file():
            doc = _read_json(path)
            if doc.get("identity") != identity:
                diff = sorted(k for k in set(identity) | set(doc.get("identity", {}))
                              if identity.get(k) != doc.get("identity", {}).get(k))
                raise CheckpointMismatchError(f"{out} holds a study of another protocol or model (differs in {diff}); "
                                              "choose another --out, or delete it to start over.")
            self.doc = doc
        else:
            out.mkdir(parents=True, exist_ok=True)
            self.doc = {"format": FORMAT, "identity": identity, "seconds": {}, "machine": _machine()}
            self._save()

    def _save(self) -> None:
        tmp = self.out / f".{STUDY_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / STUDY_FILE)

    def run(self, name: str, compute: Callable[[], Result], log: Callable[[str], None]) -> Any:
        cls = STEP_TYPES[name.split("/")[0]]
        path = self.out / name
        if (path / "meta.json").is_file():
            return cls.load(path)
        t0 = time.time()
        log(f"{name} ...")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = compute()
        for w in caught:  # kept in study.json (e.g. an engine fallback) and shown as usual
            self.doc.setdefault("warnings", {}).setdefault(name, []).append(f"{w.category.__name__}: {w.message}")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not isinstance(value, cls):
            raise TlensICLError(f"Study step {name!r} computed a {type(value).__name__}, not a {cls.__name__}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
        value.save(tmp)
        os.replace(tmp, path)
        self.doc["seconds"][name] = round(time.time() - t0, 1)
        self._save()
        log(f"{name} done in {self.doc['seconds'][name]:.0f} s")
        return value

    def partial(self, name: str) -> Path:
        return self.out / PARTIAL / name.replace("/", "_")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultFileError(f"{path}: not a readable study file ({e}).") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ResultFileError(f"{path}: not a tlens_icl study of format {FORMAT}.")
    return doc


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def splits(model: ModelLike, sizes: StudySizes, seed: int) -> dict[str, dict[str, Any]]:
    """Each FV task's single-token items split into train / validation / test (deterministic, disjoint)."""
    out = {}
    for t in sizes.fv_tasks:
        task = usable_task(model, t, single_token="filter")
        train, rest = task.split(1 - sizes.train_fraction, seed=seed)
        test, val = rest.split(sizes.val_fraction / (1 - sizes.train_fraction), seed=seed)
        out[t] = {"train": train, "val": val, "test": test}
    return out


def chosen_layer(res: Mapping[str, Any], S: StudySizes, kind: str) -> int:
    """The layer a vector is reported at: the first maximum (near-ties: the earlier layer) of its validation
    accuracy, averaged over the tasks (``"fv"``: and over the zero-shot and shuffled-label settings; ``"tv"``:
    zero-shot)."""
    val = [res[f"{kind}_val/{t}"] for t in S.fv_tasks]
    curve = torch.stack([v.accuracy().mean(0) if kind == "fv" else v.accuracy()[0] for v in val]).mean(0)
    return list(val[0].layers)[first_argmax(curve)]


@checked
def run_study(model: ModelLike, *, out: str | Path, sizes: StudySizes | str = "paper", seed: int = 0,
              progress: bool | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole study on ``model`` into ``out`` (resumable); return every step's result by name.

    ``sizes``: ``"paper"`` (:data:`PAPER`), ``"reduced"`` (:data:`REDUCED`), ``"smoke"`` or a :class:`StudySizes`.
    Re-running with the same model, sizes and seed loads the finished steps; another protocol in the same
    folder raises :class:`CheckpointMismatchError`.
    """
    if isinstance(sizes, str):
        if sizes not in SIZES:
            raise TlensICLError(f"sizes must be one of {sorted(SIZES)} or a StudySizes, got {sizes!r}.")
        size_name, sizes = sizes, SIZES[sizes]
    else:
        size_name = "custom"
    say = log or (lambda msg: None)
    info = run_info(model)
    identity = {"model": info["model"], "model_source": info.get("model_source"), "n_layers": info["n_layers"],
                "n_heads": info["n_heads"], "d_model": info["d_model"], "sizes": sizes.to_json(), "size_name": size_name,
                "seed": seed}
    steps = _Steps(Path(out), identity)
    steps.doc["tlens_icl"] = info["tlens_icl"]
    steps.doc["transformer_lens"] = info["transformer_lens"]
    res: dict[str, Any] = {}
    S = sizes

    # splits are validated before the first forward pass (a task too small for the sizes raises here)
    parts = splits(model, S, seed)
    for t, p in parts.items():
        need = {"train": S.n_mean + S.n_shots, "val": S.n_val, "test": max(S.n_test, S.n_ablation)}
        short = {k: (len(p[k].items), v) for k, v in need.items() if len(p[k].items) < v}
        if short:
            raise TlensICLError(f"Task {t!r} has too few single-token items for these sizes on this model: "
                                + ", ".join(f"{k} {have} < {want}" for k, (have, want) in short.items()))

    res["accuracy"] = steps.run("accuracy", lambda: icl_accuracy(
        model, list(S.icl_tasks), shots=list(S.icl_shots), n=S.n_icl, seed=seed, progress=progress,
        checkpoint=steps.partial("accuracy")), say)
    med = res["mediation"] = steps.run("mediation", lambda: indirect_effect(
        model, [parts[t]["train"] for t in S.fv_tasks], n_mean=S.n_mean, n=S.n_corrupted, n_shots=S.n_shots,
        corruption="shuffled_labels", seed=seed, progress=progress, checkpoint=steps.partial("mediation")), say)
    top = med.top_heads(S.k)
    fvs = {t: function_vector_from_heads(model, med.mean_z[i], top, task=t) for i, t in enumerate(med.tasks)}
    fv_kw = dict(n_shots=S.n_shots, seed=seed + 3, progress=progress)
    for t in S.fv_tasks:
        res[f"fv_val/{t}"] = steps.run(f"fv_val/{t}", lambda t=t: function_vector_sweep(
            model, fvs[t], parts[t]["val"], n=S.n_val, demos_from=parts[t]["train"], **fv_kw), say)
    fv_layer = chosen_layer(res, S, "fv")
    for t in S.fv_tasks:
        res[f"fv_test/{t}"] = steps.run(f"fv_test/{t}", lambda t=t: function_vector_sweep(
            model, fvs[t], parts[t]["test"], layers=[fv_layer], n=S.n_test, demos_from=parts[t]["train"], **fv_kw), say)
    tvs: dict[str, Any] = {}

    def tv_of(t: str) -> Any:  # computed only when a step that needs it has not finished yet
        if t not in tvs:
            tvs[t] = task_vector(model, parts[t]["train"], n=S.n_tv, n_shots=S.tv_shots, seed=seed + 5)
        return tvs[t]

    for t in S.fv_tasks:
        res[f"tv_val/{t}"] = steps.run(f"tv_val/{t}", lambda t=t: task_vector_sweep(
            model, tv_of(t), parts[t]["val"], n=S.n_val, seed=seed + 6, progress=progress), say)
    tv_layer = chosen_layer(res, S, "tv")
    for t in S.fv_tasks:
        res[f"tv_test/{t}"] = steps.run(f"tv_test/{t}", lambda t=t: task_vector_sweep(
            model, tv_of(t), parts[t]["test"], layers=[tv_layer], n=S.n_test, seed=seed + 6, progress=progress), say)
    res["tv_icl"] = steps.run("tv_icl", lambda: icl_accuracy(
        model, [parts[t]["test"] for t in S.fv_tasks], shots=[0, S.tv_shots], n=S.n_test, seed=seed + 6,
        demos_from=None, metric="first_token", progress=progress), say)

    if not all((steps.out / s / "meta.json").is_file() for s in ("decodability", "rsa")):
        acts = task_activations(model, list(S.cd_tasks), shots=list(S.icl_shots), n=S.n_icl, seed=seed,
                                sites=["resid_post"], progress=progress)
    else:
        acts = None
    res["decodability"] = steps.run("decodability", lambda: concept_decodability(
        acts, k=10, metric="cosine", n_shuffles=5, seed=seed, progress=progress), say)
    res["rsa"] = steps.run("rsa", lambda: rsa(acts, {"task": "task"}, n_permutations=S.rsa_permutations, seed=seed,
                                              progress=progress), say)
    acts = None  # free the activations before the head analyses (a del would leave the lambdas above a dangling name)
    hs = res["head_scores"] = steps.run("head_scores", lambda: head_scores(
        model, n=S.n_head_seqs, length=S.head_seq_length, seed=seed), say)
    res["ablation"] = steps.run("ablation", lambda: head_ablation(
        model, [parts[t]["test"] for t in S.fv_tasks], {"FV": med, "induction": hs}, ks=(0, *S.ablation_ks),
        exclude=S.ablation_exclude, n_random=S.n_random, n=S.n_ablation, n_shots=S.n_shots, seed=seed + 7,
        positions="query", loss=False, progress=progress), say)
    if S.attention_task is not None:
        rc = {f"{k}-shot": make_prompts(model, S.attention_task, n=S.n_rc, n_shots=k, seed=seed + 8)
              for k in (0, S.rc_shots)}
        res["attention"] = steps.run("attention", lambda: attention_ratio(model, rc, progress=progress), say)
        res["attention_accuracy"] = steps.run("attention_accuracy", lambda: icl_accuracy(
            model, S.attention_task, shots=[0, S.rc_shots], n=S.n_rc, seed=seed + 8, progress=progress), say)
    shutil.rmtree(steps.out / PARTIAL, ignore_errors=True)
    steps.doc["complete"] = True
    steps.doc["fv_layer"], steps.doc["tv_layer"] = fv_layer, tv_layer
    steps.doc["split_sizes"] = {t: {k: len(v.items) for k, v in p.items()} for t, p in parts.items()}
    steps._save()
    return res


def load_study(folder: str | Path) -> dict[str, Any]:
    """Every stored step of a study folder by name, plus ``"study"`` (its ``study.json``)."""
    folder = Path(folder)
    doc = _read_json(folder / STUDY_FILE)
    out: dict[str, Any] = {"study": doc}
    for meta in sorted(folder.rglob("meta.json")):
        rel = meta.parent.relative_to(folder).as_posix()
        if rel.startswith(".") or rel.split("/")[0] not in STEP_TYPES:
            continue
        out[rel] = STEP_TYPES[rel.split("/")[0]].load(meta.parent)
    return out
