"""RSA with hypothesis matrices, and the causal-vs-representational head comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tlens_icl.analyses.representations.activations import from_arrays, task_activations
from tlens_icl.analyses.representations.compare_heads import (
    HeadComparisonResult,
    compare_heads,
    top_heads,
)
from tlens_icl.analyses.representations.rsa import (
    RSAResult,
    hypothesis_rdm,
    rdm,
    rsa,
    rsa_score,
)
from tlens_icl.errors import TlensICLError
from tlens_icl.results.base import tensors_equal


def clustered(n_per: int = 8, n_tasks: int = 3, d: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = [f"t{i}" for i in range(n_tasks) for _ in range(n_per)]
    x = torch.randn(len(labels), 2, d, generator=g)
    x[:, 1] = (torch.randn(n_tasks, d, generator=g) * 4).repeat_interleave(n_per, 0) + 0.2 * x[:, 1]
    return from_arrays(x, labels)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "correlation"])
def test_rdm_is_symmetric_with_zero_diagonal(metric):
    m = rdm(torch.randn(10, 6), metric=metric)
    assert torch.equal(m, m.T)
    assert torch.all(m.diagonal() == 0)
    assert bool((m >= 0).all())


def test_rsa_of_a_matrix_with_itself_is_one():
    m = rdm(torch.randn(12, 5))
    assert rsa_score(m, m) == pytest.approx(1.0)
    h = hypothesis_rdm(list("aabbcc"))
    assert h.tolist()[0] == [0, 0, 1, 1, 1, 1] and rsa_score(h, h) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rsa_invariant_to_an_orthogonal_rotation(metric):
    acts = clustered()
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(5)))
    rotated = from_arrays(acts.resid_post @ q, acts.tasks)
    a = rsa(acts, metric=metric, n_permutations=50)
    b = rsa(rotated, metric=metric, n_permutations=50)
    torch.testing.assert_close(a.rho, b.rho, atol=1e-6, rtol=0)
    assert torch.equal(a.p, b.p)  # same seed -> same permutations


def test_rsa_equals_scipy_spearman_of_the_lower_triangles():
    acts = clustered(seed=2)
    res = rsa(acts, {"task": "task", "half": [i < 12 for i in range(24)]}, n_permutations=0)
    i, j = np.tril_indices(24, -1)
    for u in range(2):
        m = rdm(acts.resid_post[:, u]).numpy()[i, j]
        for k, labels in enumerate((acts.tasks, [i < 12 for i in range(24)])):
            ref = spearmanr(m, hypothesis_rdm(labels).numpy()[i, j]).statistic
            assert float(res.rho[0, k, u]) == pytest.approx(ref, abs=1e-5)


def test_planted_structure_is_significant_and_a_tensor_hypothesis_matches_labels(tmp_path):
    acts = clustered()
    n_perm = 200
    res = rsa(acts, {"task": "task", "matrix": hypothesis_rdm(acts.tasks)}, n_permutations=n_perm)
    assert float(res.rho[0, 0, 1]) > 0.75  # the ceiling of Spearman rho with a binary hypothesis is < 1
    assert float(res.p[0, 0, 1]) == pytest.approx(1 / (n_perm + 1))  # no relabelling does as well
    assert torch.equal(res.rho[:, 0], res.rho[:, 1])
    assert ((res.p > 0) & (res.p <= 1)).all()
    loaded = RSAResult.load(res.save(tmp_path / "rsa"))
    assert tensors_equal(res, loaded)
    assert len(res.to_dataframe()) == 4 and "<img" in res._repr_html_()
    with pytest.raises(TlensICLError, match="symmetric"):
        rsa(acts, {"bad": torch.triu(torch.ones(24, 24))})


def test_head_site_scores_and_before_after(native_model, task_a, task_b):
    acts = task_activations(native_model, [task_a, task_b], shots=(0, 2), n=5, sites=["head_out"])
    res = rsa(acts, site="head_out", n_permutations=20)
    assert res.rho.shape == (2, 1, 8) and res.n_shots == (0, 2)
    assert res.head_scores(n_shots=2).shape == (2, 4)
    assert torch.equal(res.head_scores(n_shots=0).flatten(), res.rho[0, 0])
    fig = res.plot()
    assert len(fig.axes) >= 2


def test_compare_heads_rank_correlation_and_overlap(tmp_path):
    a = torch.arange(12.0).reshape(3, 4)
    same = compare_heads(a, a * 2 + 1, ks=(1, 3))
    assert same.spearman == pytest.approx(1.0) and same.overlap == (1, 3)
    reverse = compare_heads(a, -a, ks=(1, 6, 12))
    assert reverse.spearman == pytest.approx(-1.0) and reverse.overlap == (0, 0, 12)
    assert reverse.expected == (1 / 12, 3.0, 12.0)
    b = a.clone()
    b[0, 0], b[2, 3] = 100.0, -100.0  # swap the best and the worst head
    hand = compare_heads(a, b, ks=(2,))
    assert top_heads(b, 2) == [(0, 0), (2, 2)] and hand.overlap == (1,)  # shared: L2H2

    class FakeAIE:  # anything with .mean() -> [layer, head], like IndirectEffectResult
        def mean(self):
            return a

    assert compare_heads(FakeAIE(), a).spearman == pytest.approx(1.0)
    assert tensors_equal(same, HeadComparisonResult.load(same.save(tmp_path / "cmp")))
    with pytest.raises(TlensICLError, match="shape"):
        compare_heads(a, a.T)
    with pytest.raises(TlensICLError, match="k must"):
        compare_heads(a, a, ks=(13,))
