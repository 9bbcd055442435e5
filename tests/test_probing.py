"""Parameterized probing with a Hewitt & Liang control task, on synthetic activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlens_icl.analyses.representations.activations import from_arrays, task_activations
from tlens_icl.analyses.representations.probing import (
    ProbeResult,
    control_labels,
    probe,
)
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import tensors_equal

N_TYPES = 20


def synthetic(seed: int = 0):
    """80 rows = 20 query types x 4 repeats. Layer 0 encodes only the query type; layer 1 only a binary
    latent parameter that is independent of the query."""
    g = torch.Generator().manual_seed(seed)
    queries = [f"q{i % N_TYPES}" for i in range(80)]
    param = [int(v) for v in torch.randint(0, 2, (80,), generator=g)]
    d = 32  # > N_TYPES: a linear probe can memorise any labelling of the query types
    x = torch.zeros(80, 2, d)
    type_vecs = torch.randn(N_TYPES, d, generator=g) * 3
    x[:, 0] = type_vecs[[i % N_TYPES for i in range(80)]] + 0.1 * torch.randn(80, d, generator=g)
    direction = torch.randn(d, generator=g)
    x[:, 1] = torch.tensor(param, dtype=torch.float)[:, None] * 3 * direction + 0.3 * torch.randn(80, d, generator=g)
    return from_arrays(x, ["t"] * 80, queries=queries, meta=[{"p": p} for p in param])


def test_planted_parameter_is_decoded_and_selective():
    res = probe(synthetic(), "meta.p")
    assert res.kind == "classification"
    score, control = res.score[0], res.control[0]
    assert float(score[1]) > 0.95  # layer 1 carries the parameter
    assert float(score[0]) < 0.75  # layer 0 knows only the query, which is independent of it
    # the control task (random label per query type) is memorised where the query type is encoded
    assert float(control[0]) > 0.9 and float(control[1]) < 0.75
    sel = res.selectivity()[0]
    assert float(sel[1]) > 0.2 > float(sel[0])


def test_control_labels_are_constant_per_input_type():
    inputs = ["a", "b", "a", "c", "b", "a"]
    target = np.array(["x", "y", "x", "y", "x", "y"])
    ctrl = control_labels(inputs, target, kind="classification", seed=3)
    assert ctrl[0] == ctrl[2] == ctrl[5] and ctrl[1] == ctrl[4]
    assert set(ctrl) <= {"x", "y"}
    reg = control_labels(inputs, np.arange(6.0), kind="regression", seed=3)
    assert reg[0] == reg[2] == reg[5]


def test_regression_probe_recovers_a_linear_parameter(tmp_path):
    g = torch.Generator().manual_seed(1)
    slope = torch.randint(-3, 4, (90,), generator=g).float()
    x = torch.randn(90, 1, 6, generator=g)
    x[:, 0, 0] = slope  # the slope is written on one feature, the rest is noise
    acts = from_arrays(x, ["lr"] * 90, meta=[{"slope": float(s)} for s in slope])
    res = probe(acts, "meta.slope", kind="regression")
    assert res.kind == "regression" and float(res.score[0, 0]) > 0.99
    loaded = ProbeResult.load(res.save(tmp_path / "probe"))
    assert tensors_equal(res, loaded)
    assert len(res.to_dataframe()) == 1 and "<img" in res._repr_html_()
    with pytest.raises(TlensICLError, match="numeric"):
        probe(acts, ["a"] * 90, kind="regression")


def test_end_to_end_on_a_model(native_model, task_a, task_b):
    acts = task_activations(native_model, [task_a, task_b], shots=(2,), n=10, sites=["resid_post"])
    res = probe(acts, "task", folds=3)
    assert res.score.shape == (1, 2) and float(res.chance[0]) == 0.5
    assert ((res.score >= 0) & (res.score <= 1)).all()
