"""Training checkpoints of the embedded model: written, loadable by step, reproduce their logged accuracy;
heads over training (``head_dynamics``) on them."""

from __future__ import annotations

import json

import pytest
import torch

import tlens_icl
from tlens_icl.workflows.dynamics import HeadDynamicsResult
from tlens_icl.errors import ModelStateError
from tlens_icl.models.embedded import checkpoint_index, checkpoint_steps
from tlens_icl.models.loading import model_tasks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 30-step training run with checkpoints at steps 10 and 20 (the final model is step 30), trained through
    the public ``train_model``, which prints nothing."""
    import contextlib
    import io

    from tlens_icl.models.embedded import train_model

    out = tmp_path_factory.mktemp("icl-tiny-ckpt")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        got = train_model(out, steps=30, checkpoints=[10, 20, 45], eval_prompts=4, checkpoint_prompts=6, eval_every=15,
                          word_tasks=["uppercase", "first_letter"], bitwise_tasks=["bitwise_and", "bitwise_xor"])
    assert got == out
    assert printed.getvalue() == ""
    return out


@pytest.mark.parametrize("bad", [dict(steps=0), dict(checkpoints=[0, 10]), dict(eval_prompts=-1)])
def test_train_model_refuses_bad_arguments_before_training(tmp_path, bad):
    from tlens_icl.models.embedded import train_model

    with pytest.raises(ValueError, match=next(iter(bad))):
        train_model(tmp_path / "m", **bad)
    assert not (tmp_path / "m").exists()


def test_checkpoints_written_and_indexed(trained):
    index = checkpoint_index(trained)
    assert index["steps"] == [10, 20, 30] == checkpoint_steps(trained)  # 45 >= --steps is dropped
    from safetensors import safe_open

    for entry in index["checkpoints"][:-1]:
        with safe_open(str(trained / entry["file"]), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    assert index["checkpoints"][-1]["file"] == "model.safetensors"
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [r["checkpoint"] for r in log if "checkpoint" in r] == [10, 20]
    card = json.loads((trained / "card.json").read_text())
    assert card["checkpoint_steps"] == [10, 20, 30]


def test_checkpoint_round_trip_reproduces_logged_accuracy(trained):
    from transformers import AutoTokenizer

    from tlens_icl.models.embedded import _data, train

    card = json.loads((trained / "card.json").read_text())
    held = json.loads((trained / "heldout.json").read_text())
    tasks = [_data.TaskData(name=n, family=t["family"], concept=t["concept"], train=[],
                            heldout=[(d["input"], d["output"]) for d in held["tasks"][n]["heldout_items"]],
                            alternatives={}, n_library_items=0)
             for n, t in card["tasks"].items()]
    tok = AutoTokenizer.from_pretrained(str(trained / "tokenizer"))
    index = checkpoint_index(trained)
    weights = []
    for entry in index["checkpoints"]:
        model = tlens_icl.load_model(str(trained), step=entry["step"])
        assert tlens_icl.models.model_meta(model)["step"] == entry["step"]
        acc = train.checkpoint_accuracy(model, tok, tasks, index["accuracy_eval"]["prompts_per_task_and_shots"])
        assert {k: {str(s): v for s, v in a.items()} for k, a in acc.items()} == entry["accuracy"]
        weights.append(model.state_dict()["blocks.0.attn.q.weight"].clone())
    assert not torch.equal(weights[0], weights[1])  # different steps are different weights
    final = tlens_icl.load_model(str(trained))
    assert torch.equal(final.state_dict()["blocks.0.attn.q.weight"], weights[-1])
    assert model_tasks(final) == ["uppercase", "first_letter", "bitwise_and", "bitwise_xor"]


def test_step_errors(trained):
    with pytest.raises(KeyError, match="available steps"):
        tlens_icl.load_model(str(trained), step=15)
    with pytest.raises(ModelStateError):
        tlens_icl.load_model("icl-tiny@abc")
    if not checkpoint_steps("icl-tiny"):
        with pytest.raises(FileNotFoundError, match="no training checkpoints"):
            tlens_icl.load_model("icl-tiny@100")


def test_head_dynamics_on_checkpoints(trained, tmp_path):
    res = tlens_icl.head_dynamics(str(trained), tasks=["uppercase", "bitwise_and"], k=2, n_shots=3, n=6, n_mean=6,
                                  n_corrupted=4, n_random=4, length=8, lags=(1, 2, 3))
    assert res.steps == (10, 20, 30) and res.induction.shape == (3, 4, 8)
    final = tlens_icl.load_model(str(trained))
    hs = tlens_icl.head_scores(final, n=4, length=8)
    torch.testing.assert_close(res.induction[-1], hs.induction())
    tracked = {str(h) for h in res.top_fv + res.top_induction + res.top_previous}
    measured = {f"L{int(i) // 8}H{int(i) % 8}" for i in (~res.aie[0].flatten().isnan()).nonzero().flatten()}
    assert measured == tracked
    back = HeadDynamicsResult.load(res.save(tmp_path / "dyn"))
    from tlens_icl.results import tensors_equal

    assert tensors_equal(res, back)
