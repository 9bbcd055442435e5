"""icl-forming: its training rows, its shipped checkpoints (ordered, complete, reproducing their logged metrics),
and heads over training measured on each checkpoint, not on the final model."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest
import torch

import tlens_icl
from tlens_icl.workflows.dynamics import phase_change
from tlens_icl.models.embedded import EMBEDDED_MODELS, checkpoint_index, checkpoint_steps, embedded_model_path
from tlens_icl.models.embedded import forming as F
from tlens_icl.models.loading import model_tasks

SHIPPED = "icl-forming" in EMBEDDED_MODELS
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="icl-forming is not in this checkout")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 30-step icl-forming run with checkpoints at 10 and 20 (the final model is step 30), quietly."""
    out = tmp_path_factory.mktemp("forming")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        F.train_forming(out, steps=30, checkpoints=[10, 20], eval_prompts=6)
    assert printed.getvalue() == ""
    return out


@pytest.fixture(scope="module")
def sampler():
    from tlens_icl.models.embedded import _data
    from tlens_icl.models.embedded._tokenizer import build_tokenizer

    pool, tasks = F.load_tasks()
    tok = build_tokenizer(_data.vocabulary(tasks, extra=[*pool, *F.symbols()]))
    return F.RowSampler(tok, tasks, pool, seed=5), tok


@pytest.mark.parametrize("bad", [dict(steps=0), dict(checkpoints=[0, 10]), dict(eval_prompts=-1), dict(threads=0)])
def test_train_forming_refuses_bad_arguments_before_training(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        F.train_forming(tmp_path / "m", **bad)
    assert not (tmp_path / "m").exists()


def _kind_rows(sampler, kind, n=40):
    s, _ = sampler
    toks, tgts, fresh = zip(*s.rows([F.KINDS.index(kind)] * n))
    return torch.tensor(toks), torch.tensor(tgts), torch.tensor(fresh)


@pytest.mark.parametrize("kind", F.KINDS)
def test_every_target_is_the_next_token(sampler, kind):
    toks, tgts, _ = _kind_rows(sampler, kind)
    assert toks.shape[1] == F.ROW_LEN
    ok = tgts != F.IGNORE
    assert ok.any() and not ok[:, -1].any()
    assert torch.equal(tgts[:, :-1][ok[:, :-1]], toks[:, 1:][ok[:, :-1]])


def test_lookup_targets_are_values_of_keys_seen_before(sampler):
    toks, tgts, _ = _kind_rows(sampler, "lookup")
    for row, tgt in zip(toks.tolist(), tgts.tolist()):
        keys_seen, n_targets = set(), 0
        for i in range(1, len(row) - 1, 3):  # lines: <bos> k v, then \n k v
            if row[i] == sampler[0].pad:
                break
            assert (tgt[i] != F.IGNORE) == (row[i] in keys_seen)
            n_targets += tgt[i] != F.IGNORE
            keys_seen.add(row[i])
        assert n_targets == sum(t != F.IGNORE for t in tgt) > 0


def test_repeat_rows_repeat_a_span_of_varying_length_to_the_end(sampler):
    toks, tgts, fresh = _kind_rows(sampler, "repeat", n=60)
    lengths = set()
    for row, tgt, fr in zip(toks.tolist(), tgts.tolist(), fresh.tolist()):
        t = sum(fr) + 1
        lengths.add(t)
        assert len(set(row[1:t + 1])) == t and all(row[i] == row[i - t] for i in range(t + 1, len(row)))
        assert [i for i, v in enumerate(tgt) if v != F.IGNORE] == list(range(t + 1, len(row) - 1))
    assert len(lengths) > 10  # no fixed offset can stand in for induction


def test_markov_rows_follow_the_chain_except_for_noise(sampler):
    toks, _, _ = _kind_rows(sampler, "markov", n=60)
    sym = {t: i for i, t in enumerate(sampler[0].sym)}
    table = F.markov_table()
    s = [[sym[t] for t in row[1:]] for row in toks.tolist()]
    follow = [r[i] == table[r[i - 2]][r[i - 1]] for r in s for i in range(2, len(r))]
    rate = sum(follow) / len(follow)
    assert 0.88 < rate < 0.95  # 90 % follow the table, plus noise that lands on it by chance (1/24 of 10 %)


def test_lag_targets_hand_computed():
    from tlens_icl.analyses.heads.scores import lag_targets

    toks = torch.tensor([[7, 1, 2, 3, 1, 2, 3]])  # BOS-like 7, then "1 2 3" twice
    targets, rows = lag_targets(toks, [1, 2])
    ind1, ind2, back1, back2 = targets[:, 0]
    assert ind1.nonzero().tolist() == [[4, 2], [5, 3], [6, 4]]  # the key after the earlier occurrence (lag 1)
    assert ind2.nonzero().tolist() == [[4, 3], [5, 4], [6, 5]]  # two after it (6 -> 5: the key may be the query's neighbour)
    assert back2.nonzero().tolist() == [[q, q - 2] for q in range(2, 7)]
    assert rows[0, 0].tolist() == [False] * 4 + [True] * 3 and rows[2, 0].tolist() == [False] + [True] * 6


def test_phase_change_hand_computed():
    # rise 0.1 -> 0.9 (0.8): 20 % is 0.26, reached between steps 100 (0.1) and 200 (0.5) at 140; 80 % is 0.74,
    # between 200 (0.5) and 300 (0.9) at 260.
    assert phase_change([0, 100, 200, 300, 400], [0.1, 0.1, 0.5, 0.9, 0.85]) == pytest.approx((140.0, 260.0))
    assert phase_change([0, 100, 200], [0.1, 0.15, 0.2]) is None  # a rise under 0.2 is no phase change


def test_checkpoints_reproduce_their_logged_metrics(run):
    """Every checkpoint loaded by step gives exactly its logged losses and accuracy, and differs from the others."""
    from transformers import AutoTokenizer

    index = checkpoint_index(run)
    assert index["steps"] == [10, 20, 30] == checkpoint_steps(run)
    pool, tasks = F.load_tasks()
    tok = AutoTokenizer.from_pretrained(str(run / "tokenizer"))
    seen = []
    for entry in index["checkpoints"]:
        model = tlens_icl.load_model(str(run), step=entry["step"])
        got = F.checkpoint_metrics(model, tok, tasks, pool, index["metrics"]["accuracy_prompts_per_task_and_shots"])
        assert got["accuracy"] == entry["accuracy"]
        for k, v in entry["loss"].items():
            assert got["loss"][k] == pytest.approx(v, abs=2e-5), k
        seen.append(entry["loss"]["markov"])
    assert len(set(seen)) == 3  # three steps, three models


def test_training_is_deterministic(run, tmp_path):
    """The same seed gives the same weights (one thread): a re-run of the fixture's first 10 steps matches."""
    from safetensors.torch import load_file

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        F.train_forming(tmp_path / "again", steps=11, checkpoints=[10], eval_prompts=6)
    a = load_file(str(run / "checkpoints" / "step_000010.safetensors"))
    b = load_file(str(tmp_path / "again" / "checkpoints" / "step_000010.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_log_has_every_step_in_order(run):
    with open(run / "train_log.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert set(rows[0]) == {"step", "lr", "loss", *(f"loss_{k}" for k in F.KINDS)}
    loss = [float(r["loss"]) for r in rows]
    assert all(torch.isfinite(torch.tensor(loss))) and loss[-1] < loss[0]


def test_head_dynamics_measures_each_checkpoint_not_the_final_model(run):
    res = tlens_icl.head_dynamics(str(run), k=2, n_shots=3, n=6, n_mean=6, n_corrupted=4, n_random=4, length=8, lags=(1, 2, 3))
    assert res.steps == (10, 20, 30)
    assert list(res.train_steps) == list(range(1, 31)) and res.train_columns[0] == "loss"
    tasks = model_tasks(tlens_icl.load_model(str(run)))
    for s, step in enumerate(res.steps):
        m = tlens_icl.load_model(str(run), step=step)
        acc = tlens_icl.icl_accuracy(m, tasks, shots=(0, 3), n=6, seed=0, batch_size=16).accuracy().mean(0)
        torch.testing.assert_close(res.accuracy[s], acc)
        icl = tlens_icl.token_loss_score(m, "episodes", tasks=tasks, n=6 * len(tasks), n_shots=3, seed=0)
        assert float(res.icl_score[s]) == pytest.approx(icl.score(), abs=1e-5)
        torch.testing.assert_close(res.induction[s], tlens_icl.head_scores(m, n=4, length=8).induction())
        torch.testing.assert_close(res.lag_induction[s, 0], res.induction[s])  # lag 1 is the induction score
    assert not torch.equal(res.induction[0], res.induction[-1])
    assert not bool(res.ablated.isnan().any())


def test_head_dynamics_result_rejects_unordered_steps(run):
    res = tlens_icl.head_dynamics(str(run), steps=[10], k=1, n_shots=2, n=4, n_mean=4, n_corrupted=2, n_random=2,
                                  length=8, lags=(1, 2), ablate=False)
    assert bool(res.ablated.isnan().all())
    import dataclasses

    with pytest.raises(tlens_icl.TlensICLError, match="strictly increasing"):
        dataclasses.replace(res, steps=tuple(reversed(res.steps)))


# ---- the shipped model


@needs_shipped
def test_shipped_checkpoints_are_ordered_complete_and_small():
    from safetensors import safe_open

    path = embedded_model_path("icl-forming")
    index = checkpoint_index(path)
    steps = index["steps"]
    assert len(steps) >= 12 and steps == sorted(set(steps)) == [c["step"] for c in index["checkpoints"]]
    assert steps == json.loads((path / "card.json").read_text())["checkpoint_steps"]
    total = 0
    for c in index["checkpoints"]:
        f = path / c["file"]
        total += f.stat().st_size
        with safe_open(str(f), "pt") as fh:
            assert fh.metadata()["step"] == str(c["step"])  # each file holds the step its entry names
            assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}  # noqa: SIM118
    assert total <= 25 * 2**20
    with open(path / "train_log.csv", encoding="utf-8") as fh:
        logged = [int(r["step"]) for r in csv.DictReader(fh)]
    assert logged == list(range(1, steps[-1] + 1))


@needs_shipped
@pytest.mark.parametrize("which", [1, "middle", -1])
def test_shipped_checkpoint_reproduces_its_logged_metrics(which):
    from transformers import AutoTokenizer

    path = embedded_model_path("icl-forming")
    index = checkpoint_index(path)
    entries = index["checkpoints"]
    entry = entries[len(entries) // 2] if which == "middle" else entries[which]
    model = tlens_icl.load_model(f"icl-forming@{entry['step']}")
    pool, tasks = F.load_tasks()
    tok = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    n = index["metrics"]["accuracy_prompts_per_task_and_shots"]
    got = F.checkpoint_metrics(model, tok, tasks, pool, n)
    # logged on another CPU: an argmax near a tie may flip one prompt of a cell there, never more
    assert got["accuracy"].keys() == entry["accuracy"].keys()
    for task, cells in entry["accuracy"].items():
        for shots, v in cells.items():
            assert abs(got["accuracy"][task][shots] - v) <= 1 / n + 1e-9, (task, shots)
    for k, v in entry["loss"].items():
        assert got["loss"][k] == pytest.approx(v, abs=2e-5), k


@needs_shipped
def test_unknown_step_lists_the_available_ones():
    steps = checkpoint_steps("icl-forming")
    with pytest.raises(KeyError, match=f"available steps: \\[{steps[0]}, {steps[1]}"):
        tlens_icl.load_model(f"icl-forming@{steps[0] + 1}")
