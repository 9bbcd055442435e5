"""Concept decodability: defining properties on synthetic activations, plus an end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.analyses.representations.activations import from_arrays, task_activations
from tlens_icl.analyses.representations.decodability import (
    DecodabilityResult,
    concept_decodability,
    loo_knn_predict,
)
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import tensors_equal


def planted(n_per_task: int = 30, n_tasks: int = 4, d: int = 16, layers: int = 2, seed: int = 0):
    """Layer 0: pure noise. Layer 1: the task is a separable cluster (centre + small noise)."""
    g = torch.Generator().manual_seed(seed)
    labels = [f"t{i}" for i in range(n_tasks) for _ in range(n_per_task)]
    centres = torch.randn(n_tasks, d, generator=g) * 3
    x = torch.randn(len(labels), layers, d, generator=g)
    x[:, 1] = centres.repeat_interleave(n_per_task, 0) + 0.3 * torch.randn(len(labels), d, generator=g)
    return from_arrays(x, labels)


def test_planted_concept_decodes_and_shuffled_labels_are_at_chance():
    res = concept_decodability(planted(n_per_task=100), k=10, n_shuffles=10)
    cd = res.scores()[0]
    assert float(cd[1]) == 1.0
    lo, hi = res.ci(0.99)
    assert float(res.chance[0]) == pytest.approx(0.25)
    assert float(lo[0, 0]) <= 0.25 <= float(hi[0, 0])  # noise layer: chance within the CI
    for u in range(2):  # the shuffled-label control is at chance, well below the planted layer
        assert abs(float(res.shuffled[0, u]) - 0.25) < 0.1


def test_leave_one_out_never_uses_the_held_out_point():
    # clusters of 4 points, each point of a cluster with a different label: a point's only same-label
    # neighbour is itself, so an honest leave-one-out classifier is always wrong.
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(10, 8, generator=g) * 10
    x = centres.repeat_interleave(4, 0) + 0.01 * torch.randn(40, 8, generator=g)
    labels = [f"c{i % 4}" for i in range(40)]
    res = concept_decodability(from_arrays(x[:, None], labels), k=3, n_shuffles=0)
    assert float(res.scores()[0, 0]) == 0.0
    # the self-inclusive version (fit and predict on the same points) scores 1.0 here
    from sklearn.neighbors import KNeighborsClassifier

    y = np.array([i % 4 for i in range(40)])
    assert KNeighborsClassifier(n_neighbors=1).fit(x.numpy(), y).score(x.numpy(), y) == 1.0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_loo_equals_explicit_refit_without_the_point(metric):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) + np.repeat(rng.normal(size=(2, 5)), 20, 0)
    y = np.repeat([0, 1], 20)
    fast = loo_knn_predict(x, y, k=5, metric=metric)  # k odd, two classes: no ties
    keep = lambda i: np.arange(40) != i  # noqa: E731
    slow = [KNeighborsClassifier(5, metric=metric).fit(x[keep(i)], y[keep(i)]).predict(x[i : i + 1])[0] for i in range(40)]
    assert fast.tolist() == slow


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_invariant_to_an_orthogonal_rotation(metric):
    acts = planted(seed=3)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(4)))
    rotated = from_arrays(acts.resid_post @ q, acts.tasks)
    a = concept_decodability(acts, metric=metric, n_shuffles=0)
    b = concept_decodability(rotated, metric=metric, n_shuffles=0)
    assert torch.equal(a.correct, b.correct)


def test_shot_groups_are_scored_separately_and_round_trip(tmp_path):
    x = planted(n_per_task=10).resid_post
    noise = torch.randn_like(x)
    acts = from_arrays(torch.cat([noise, x]), planted(n_per_task=10).tasks * 2, n_shots=[0] * 40 + [4] * 40)
    res = concept_decodability(acts, n_shuffles=2)
    assert res.n_shots == (0, 4) and res.correct.shape == (2, 2, 40)
    assert float(res.scores()[1, 1]) == 1.0
    df = res.to_dataframe()
    assert len(df) == 4 and set(df.columns) >= {"cd", "shuffled", "chance", "ci_low", "ci_high"}
    assert res.per_task().query("n_shots == 4 and unit == 'L1'")["cd"].tolist() == [1.0] * 4
    loaded = DecodabilityResult.load(res.save(tmp_path / "cd"))
    assert tensors_equal(res, loaded)
    assert "<img" in loaded._repr_html_()
    with pytest.raises(TlensICLError, match="same number"):
        concept_decodability(acts.select(list(range(79))))


def test_correlate_with_accuracy():
    # per-task CD rises with the task index and with shots; make accuracy follow the same order
    tasks = ["t0", "t1", "t2"]
    x = torch.zeros(60, 1, 2)
    rows, shots = [], []
    g = torch.Generator().manual_seed(0)
    for s_i, s in enumerate((0, 4)):
        for t_i, t in enumerate(tasks):
            sep = 0.5 * (t_i + 1) * (s_i + 1)
            x[len(rows) : len(rows) + 10, 0] = torch.tensor([sep * t_i, 0.0]) + torch.randn(10, 2, generator=g)
            rows += [t] * 10
            shots += [s] * 10
    res = concept_decodability(from_arrays(x, rows, n_shots=shots), metric="euclidean", k=3, n_shuffles=0)
    per_task = res.per_task().set_index(["task", "n_shots"])["cd"]
    acc = torch.tensor([[float(per_task[(t, s)]) for s in (0, 4)] for t in tasks])
    accuracy = AccuracyResult(correct=acc[..., None].expand(3, 2, 5).clone(), answer_prob=torch.zeros(3, 2, 5),
                              tasks=tuple(tasks), n_shots=(0, 4), info={})
    out = res.correlate(accuracy)
    assert out["r"].iloc[0] == pytest.approx(1.0) and out["n_cells"].iloc[0] == 6


def test_end_to_end_on_a_model(native_model, task_a, task_b, tmp_path):
    acts = task_activations(native_model, [task_a, task_b], shots=(3, 1), n=6, sites=["resid_post", "z"])
    res = concept_decodability(acts, site="z", k=3)
    assert res.units[0] == (0, 0) and res.correct.shape == (2, 8, 12)
    assert ((res.scores() >= 0) & (res.scores() <= 1)).all()
    fig = res.plot()
    assert fig.axes[0].get_xlabel() == "layer"
    # shot groups come in increasing order while info keeps the caller's (3, 1): the file is still consistent
    assert res.n_shots == (1, 3) and res.info["n_shots"] == [3, 1]
    assert tensors_equal(res, DecodabilityResult.load(res.save(tmp_path / "cd")))
    assert torch.equal(res.above_control(), res.scores() - res.shuffled)


def test_cli_subcommands(capsys, tmp_path):
    from tlens_icl.cli.main import main

    assert main(["decodability", "bitwise_and", "bitwise_or", "--shots", "0", "4", "--n", "8",
                 "--out", str(tmp_path / "cd")]) == 0
    out = capsys.readouterr().out
    assert "Concept decodability" in out and "L3" in out
    assert DecodabilityResult.load(tmp_path / "cd").n_shots == (0, 4)
    assert {"index.html", "decodability.png", "decodability.csv"} <= {p.name for p in (tmp_path / "cd").iterdir()}
    assert main(["rsa", "uppercase", "first_letter", "--shots", "0", "2", "--n", "6",
                 "--permutations", "10"]) == 0
    assert "RSA of icl-tiny (resid_post" in capsys.readouterr().out
    assert main(["probe", "bitwise_and", "bitwise_nand", "--shots", "4", "--n", "10"]) == 0
    assert "Linear probe for 'task'" in capsys.readouterr().out
    assert main(["attention-ratio", "bitwise_xor", "--shots", "1", "2", "--n", "4", "--relevant", "demo_output",
                 "--irrelevant", "demo_input"]) == 0
    assert "2-shot: share on demo_output per layer" in capsys.readouterr().out
    assert main(["attention-ratio", "reading_comprehension"]) == 2  # icl-tiny cannot tokenize passages: clean error
