"""Bad input gets a clear error before any forward pass (issue 10's probes), loaded files are validated, and a
property-based test (hypothesis) throws bad values at the public entry points' arguments."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlens_icl as ti
from conftest import without_typechecker
from tlens_icl import _validate
from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.analyses.causal.mediation import IndirectEffectResult, head_attention_html
from tlens_icl.analyses.heads.overlap import head_overlap
from tlens_icl.analyses.representations.activations import from_arrays
from tlens_icl.analyses.vectors.function_vectors import (
    FunctionVector,
    function_vector_from_heads,
    function_vector_sweep,
)
from tlens_icl.analyses.vectors.steering import SteeringVector, generate, steer
from tlens_icl.errors import (
    HookNotFiredError,
    ModelStateError,
    ResultFileError,
    TlensICLError,
)


@contextlib.contextmanager
def no_forward(model):
    """Fail the test if the model runs a forward pass inside the block."""
    cls = type(model)
    original = cls.forward

    def refuse(*a, **k):
        raise AssertionError("a forward pass ran before the bad input was rejected")

    cls.forward = refuse
    try:
        yield
    finally:
        cls.forward = original


@pytest.fixture(scope="module")
def acts():
    g = torch.Generator().manual_seed(0)
    return from_arrays(torch.randn(12, 2, 4, generator=g), ["a", "b", "c"] * 4)


# ---- the issue's probes ----------------------------------------------------------------------------------
def test_probes_fail_before_any_forward_pass(native_model, task_a, acts, tmp_path):
    from tlens_icl.workflows.pipeline import run_pipeline

    pairs = ti.make_prompt_pairs(native_model, task_a, n=2, n_shots=2, single_token="filter")  # 1 shot cannot shuffle
    v = torch.ones(native_model.cfg.d_model)
    with no_forward(native_model):
        cases = [
            (lambda: ti.rsa(acts, n_permutations=-5), "n_permutations"),
            (lambda: ti.icl_accuracy("icl-tiny", task_a), r"load_model\('icl-tiny'\)"),
            (lambda: ti.head_patching("gpt2", pairs), "load_model"),
            (lambda: ti.icl_accuracy(native_model, task_a, shots=[]), "shots is empty"),
            (lambda: ti.icl_accuracy(native_model, task_a, n=2.5), "n must be an int"),
            (lambda: ti.icl_accuracy(native_model, task_a, batch_size=0), "batch_size must be an int >= 1"),
            (lambda: function_vector_from_heads(native_model, torch.zeros(2, 4, 16), [(1.7, 2)]), "int pairs"),
            (lambda: ti.head_patching(native_model, pairs, heads=[(1.7, 2)]), "int pairs"),
            (lambda: task_a.split(test_size=-0.2), "test_size"),
            (lambda: task_a.split(test_size=1.0), "test_size"),
            (lambda: ti.head_patching(native_model, pairs, method="fastest"), "method"),
            (lambda: ti.head_patching(native_model, pairs, method="fastest", position="all"), "method"),
            (lambda: SteeringVector.from_function_vector(v, layer=True), "layer must be an int"),
            (lambda: function_vector_sweep(native_model, v, task_a, layers=[True]), "layers"),
            (lambda: SteeringVector.from_function_vector(v * float("nan"), layer=0), "NaN"),
            (lambda: SteeringVector.from_task_vector(v * float("inf"), layer=0), "NaN/inf"),
            (lambda: SteeringVector(v * float("nan"), 0), "NaN"),
            (lambda: SteeringVector.from_function_vector(v, layer=0, position=-1), "position must be >= 0"),
            (lambda: function_vector_sweep(native_model, v, task_a, n=2, n_shots=2, position=500), "position"),
            (lambda: run_pipeline(native_model, tasks=["x"], out=tmp_path / "f.txt" / "sub"), "under the file"),
            (lambda: ti.concept_decodability(acts, k=0), "k must be"),
            (lambda: ti.soft_injection(native_model, task_a, lr=0), "lr"),
        ]
        (tmp_path / "f.txt").write_text("a file")
        for call, match in cases:
            with pytest.raises(TlensICLError, match=match):
                call()


def test_eval_mode_and_padding_are_checked_by_every_injection(tokenizer):
    from conftest import build_model

    model = build_model("native", tokenizer)
    v = torch.ones(model.cfg.d_model)
    model.train()
    with no_forward(model):
        with pytest.raises(ModelStateError, match="eval"):
            steer(model, SteeringVector(v, 0))
        with pytest.raises(ModelStateError, match="eval"):
            ti.evaluate_steering(model, ti.make_prompts(model, "uppercase", n=2, n_shots=0), SteeringVector(v, 0))
        with pytest.raises(ModelStateError, match="eval"):
            generate(model, torch.tensor([[1, 5, 6]]), steering=SteeringVector(v, 0))
    model.eval()
    pad = tokenizer.pad_token_id
    with no_forward(model):
        with pytest.raises(TlensICLError, match="right-padded"):
            generate(model, torch.tensor([[1, 5, 6], [1, 5, pad]]), steering=SteeringVector(v, 0))
        with pytest.raises(TlensICLError, match="left-padded"):
            generate(model, torch.tensor([[1, 5, 6], [pad, 1, 5]]), steering=SteeringVector(v, 0))


def test_position_beyond_the_sequence_is_a_clear_error(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=2, n_shots=1)
    with pytest.raises(TlensICLError, match="position=500 is outside"):
        with steer(native_model, SteeringVector(torch.ones(native_model.cfg.d_model), 0, position=500)):
            native_model(batch.tokens)


def test_cli_refuses_an_output_folder_under_a_file_before_running(tmp_path, capsys):
    from tlens_icl import cli

    (tmp_path / "f").write_text("x")
    assert cli.main(["accuracy", "uppercase", "--out", str(tmp_path / "f" / "out")]) == 2
    assert "under the file" in capsys.readouterr().err


def test_a_with_block_without_a_forward_pass_says_so(native_model):
    v = torch.ones(native_model.cfg.d_model)
    with pytest.raises(HookNotFiredError, match="No forward pass ran inside the `with` block"):
        with steer(native_model, SteeringVector(v, 0)):
            pass
    with pytest.raises(HookNotFiredError, match="although the model ran"):  # stopped before the hooked layer
        with steer(native_model, SteeringVector(v, 1)):
            native_model(torch.tensor([[1, 5, 6]]), stop_at_layer=1)


def test_task_json_errors_name_the_file_and_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "t", "items": [{"input": "a"}]}))
    with pytest.raises(TlensICLError, match=r"bad.json: .*no 'output' field"):
        ti.Task.from_json(bad)
    bad.write_text(json.dumps({"items": [{"input": "a", "output": "b"}]}))
    with pytest.raises(TlensICLError, match="'name' field"):
        ti.Task.from_json(bad)
    bad.write_text('{"name": "t", "items": [')
    with pytest.raises(TlensICLError, match="not valid JSON"):
        ti.Task.from_json(bad)


# ---- loaded files ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(native_model, task_a, tmp_path_factory):
    res = ti.icl_accuracy(native_model, task_a, shots=[0, 1], n=3)
    fv = function_vector_from_heads(native_model, torch.randn(2, 4, 16), [(0, 1)])
    root = tmp_path_factory.mktemp("results")
    return res, res.save(root / "acc"), fv, fv.save(root / "fv")


def _rewrite(src, dst, *, meta=None, tensors=None):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if meta is not None:
        doc = json.loads((dst / "meta.json").read_text())
        meta(doc)
        (dst / "meta.json").write_text(json.dumps(doc))
    if tensors is not None:
        t = load_file(str(dst / "tensors.safetensors"))
        tensors(t)
        save_file(t, str(dst / "tensors.safetensors"))
    return dst


def test_result_load_validates_the_file(saved, tmp_path):
    res, path, fv, fv_path = saved
    from tlens_icl.results.base import tensors_equal

    assert tensors_equal(res, AccuracyResult.load(path))
    cases = [
        (_rewrite(path, tmp_path / "future", meta=lambda d: d.update(schema=99)), "newer than this tlens_icl"),
        (_rewrite(path, tmp_path / "noschema", meta=lambda d: d.pop("schema")), "schema version"),
        (_rewrite(path, tmp_path / "extra", meta=lambda d: d["fields"].update(bogus=1)), r"unknown \['bogus'\]"),
        (_rewrite(path, tmp_path / "missing", meta=lambda d: d["fields"].pop("tasks")), r"missing \['tasks'\]"),
        (_rewrite(path, tmp_path / "labels", meta=lambda d: d["fields"].update(tasks=["a", "b"])),
         "tasks has 2 entries but the tensors' 'task' dimension is 1"),
        (_rewrite(path, tmp_path / "shape", tensors=lambda t: t.update(answer_prob=t["answer_prob"][..., :2].contiguous())),
         "'example' = 2, but another field has 'example' = 3"),
        (_rewrite(path, tmp_path / "dtype", tensors=lambda t: t.update(correct=t["correct"].long())), "Float tensor"),
        (_rewrite(path, tmp_path / "astensor", tensors=lambda t: t.update(tasks=torch.zeros(1))), "both as tensors"),
    ]
    for folder, match in cases:
        with pytest.raises(ResultFileError, match=match):
            AccuracyResult.load(folder)
    with pytest.raises(ResultFileError, match="not a FunctionVector"):
        FunctionVector.load(path)
    wrong = _rewrite(fv_path, tmp_path / "fvsize", tensors=lambda t: t.update(vector=t["vector"][:10]))
    with pytest.raises(ResultFileError, match="'d_model' dimension is 10, but the result was made on a model with 64"):
        FunctionVector.load(wrong)
    trunc = _rewrite(path, tmp_path / "trunc")
    data = (trunc / "tensors.safetensors").read_bytes()
    (trunc / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultFileError, match="truncated or corrupt"):
        AccuracyResult.load(trunc)
    (trunc / "meta.json").unlink()
    with pytest.raises(ResultFileError, match="no meta.json"):
        AccuracyResult.load(trunc)


# ---- property-based: bad values for every validated argument ------------------------------------------
BAD_COUNTS = [-5, -1, 2.5, True, "3", None, math.nan]
BAD = {
    "n": BAD_COUNTS + [0], "batch_size": BAD_COUNTS + [0], "n_mean": BAD_COUNTS + [0], "seed": [1.5, "0", None, False],
    "n_shots": [-1, 1.5, "2", None], "shots": [[-1], [1.5], "2", None, []], "heads": [[(1.7, 2)], [(0, 99)], [(True, 0)], "L0H1", [(0,)], []],
    "layer": [-1, 99, True, 1.0, "0"], "layers": [[], [-1], [0, 0], [5], "0"], "coeff": [math.nan, math.inf, "1", None],
    "position": [-1, 2.5, True], "n_permutations": [-5, 1.5], "k": [0, -2, 1.5], "test_size": [0.0, 1.0, -0.2, 2, "x"],
    "steps": [-1, 0.5], "lr": [0, -0.1, math.nan], "folds": [1, 0, 2.5], "vector": [torch.full((64,), math.nan)],
}


def _calls(model, task, pairs, acts):
    v = torch.ones(model.cfg.d_model)
    return {
        "icl_accuracy": (lambda **kw: ti.icl_accuracy(model, task, **{"shots": [0], "n": 2, **kw}),
                         ["n", "batch_size", "seed", "shots"]),
        "make_prompts": (lambda **kw: ti.make_prompts(model, task, **{"n": 2, "n_shots": 1, **kw}), ["n", "seed", "n_shots"]),
        "indirect_effect": (lambda **kw: ti.indirect_effect(model, task, **{"n_mean": 2, "n": 2, "n_shots": 1,
                                                                          **kw}), ["n_mean", "heads", "batch_size"]),
        "head_patching": (lambda **kw: ti.head_patching(model, pairs, **kw), ["heads", "batch_size"]),
        "steer": (lambda **kw: steer(model, SteeringVector.from_function_vector(kw.pop("vector", v),
                                                                               **{"layer": 0, **kw})).__enter__(),
                  ["layer", "coeff", "position", "vector"]),
        "function_vector_sweep": (lambda **kw: function_vector_sweep(model, v, task, **{"n": 2, "n_shots": 1, **kw}),
                                  ["layers", "coeff", "n", "position"]),
        "soft_injection": (lambda **kw: ti.soft_injection(model, task, **{"n_mean": 2, "n_fit": 2, **kw}),
                           ["steps", "lr"]),
        "rsa": (lambda **kw: ti.rsa(acts, **kw), ["n_permutations", "seed"]),
        "concept_decodability": (lambda **kw: ti.concept_decodability(acts, **kw), ["k", "seed"]),
        "probe": (lambda **kw: ti.probe(acts, **kw), ["folds", "seed"]),
        "split": (lambda **kw: task.split(**kw), ["test_size", "seed"]),
    }


@pytest.fixture(scope="module")
def entry_points(native_model, task_a, acts):
    pairs = ti.make_prompt_pairs(native_model, task_a, n=2, n_shots=2, single_token="filter")  # 1 shot cannot shuffle
    return _calls(native_model, task_a, pairs, acts)


NAMES = {"icl_accuracy": ["n", "batch_size", "seed", "shots"], "make_prompts": ["n", "seed", "n_shots"],
         "indirect_effect": ["n_mean", "heads", "batch_size"], "head_patching": ["heads", "batch_size"],
         "steer": ["layer", "coeff", "position", "vector"],
         "function_vector_sweep": ["layers", "coeff", "n", "position"], "soft_injection": ["steps", "lr"],
         "rsa": ["n_permutations", "seed"], "concept_decodability": ["k", "seed"], "probe": ["folds", "seed"],
         "split": ["test_size", "seed"]}
TRIPLES = [(fn, arg, i) for fn, args in NAMES.items() for arg in args for i in range(len(BAD[arg]))]


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=st.sampled_from(TRIPLES))
def test_any_bad_argument_is_refused_by_name_before_any_forward(entry_points, native_model, case):
    fn, arg, i = case
    call, args = entry_points[fn]
    assert args == NAMES[fn]
    value = BAD[arg][i]
    with no_forward(native_model):
        with pytest.raises(TlensICLError) as err:
            call(**{arg: value})
    assert arg in str(err.value) or (arg == "vector" and "NaN" in str(err.value)), str(err.value)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=st.one_of(st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.text(max_size=3), st.none()))
def test_count_rule_accepts_exactly_the_positive_ints(value):
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    try:
        _validate.check_arguments("f", {"n": value})
        accepted = True
    except TlensICLError as e:
        accepted = False
        assert "n must be an int >= 1" in str(e)
    assert accepted == ok


@settings(max_examples=100, deadline=None, derandomize=True)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans()))
def test_fraction_rule_accepts_exactly_the_open_unit_interval(value):
    ok = not isinstance(value, bool) and math.isfinite(value) and 0 < value < 1
    try:
        _validate.check_arguments("f", {"test_size": value})
        accepted = True
    except TlensICLError:
        accepted = False
    assert accepted == ok


# ---- issue 21: saved results validated against themselves, results of another model refused -------------
@pytest.fixture(scope="module")
def aie_saved(native_model, task_a, task_b, tmp_path_factory):
    aie = ti.indirect_effect(native_model, [task_a, task_b], n_mean=3, n=3, n_shots=2)
    return aie, aie.save(tmp_path_factory.mktemp("aie") / "aie")


def _edit(src, dst, fields=None, tensors=None, *, legacy=False):
    """A copy of a saved result with ``fields``/``info`` values or tensors changed; ``legacy``: without the digest
    (as files saved before it was recorded), so only the consistency checks can catch the edit."""
    def meta(doc):
        for k, v in (fields or {}).items():
            if k.startswith("info."):
                doc["fields"]["info"][k[5:]] = v
            else:
                doc["fields"][k] = v
        if legacy:
            doc.pop("digest")
    return _rewrite(src, dst, meta=meta, tensors=tensors)


def test_a_saved_result_is_validated_against_itself(aie_saved, tmp_path):
    """Issue 21's edited files: each is refused (or, where a legacy file may hold a custom name, warned about)."""
    from tlens_icl.results.base import tensors_equal

    aie, path = aie_saved
    assert aie.info["model_fingerprint"] and aie.info["d_head"] == 16
    assert tensors_equal(aie, IndirectEffectResult.load(path))
    nan = lambda t: t.update(effects=torch.full_like(t["effects"], math.nan))  # noqa: E731
    edits = {
        "renamed": ({"info.model": "other"}, None), "nan": ({}, nan), "metric": ({"metric": "bogus", "info.metric": "bogus"}, None),
        "shots": ({"n_shots": -3, "info.n_shots": -3}, None), "swapped": ({"tasks": list(aie.tasks)[::-1]}, None),
        "dhead": ({}, lambda t: t.update(mean_z=t["mean_z"][..., :8].contiguous())),
    }
    for name, (fields, tensors) in edits.items():  # a file saved by this version: any edit breaks its digest
        with pytest.raises(ResultFileError, match="changed after it was saved|'d_head' dimension"):
            IndirectEffectResult.load(_edit(path, tmp_path / name, fields, tensors))
    legacy = {"nan": "NaN everywhere", "shots": "shot count is an int >= 0",
              "swapped": "tasks is .* but info records", "dhead": "'d_head' dimension is 8"}
    for name, match in legacy.items():  # without a digest, the file is checked against itself
        fields, tensors = edits[name]
        with pytest.raises(ResultFileError, match=match):
            IndirectEffectResult.load(_edit(path, tmp_path / f"legacy_{name}", fields, tensors, legacy=True))
    with pytest.warns(UserWarning, match="metric = 'bogus' is not one of"):
        IndirectEffectResult.load(_edit(path, tmp_path / "legacy_metric", *edits["metric"], legacy=True))
    fv = FunctionVector(torch.ones(64), ((0, 1),), "t", None, dict(aie.info))
    with pytest.raises(ResultFileError, match="L0H9, outside the model's 2 layers x 4 heads"):
        FunctionVector.load(_edit(fv.save(tmp_path / "fv"), tmp_path / "fv9", {"heads": [[0, 9]]}, legacy=True))


def test_a_file_saved_before_digests_and_fingerprints_still_loads(aie_saved, tmp_path):
    """Results written by tlens_icl 0.2 as released (no digest, no fingerprint, no d_head) keep loading."""
    from tlens_icl.results.base import tensors_equal

    aie, path = aie_saved

    def old(doc):
        doc.pop("digest")
        for key in ("model_fingerprint", "d_head"):
            doc["fields"]["info"].pop(key)

    back = IndirectEffectResult.load(_rewrite(path, tmp_path / "old", meta=old))
    assert "model_fingerprint" not in back.info and tensors_equal(
        back, type(aie)(**{**aie.__dict__, "info": back.info}))


def test_results_of_another_model_are_refused(native_model, task_a, tokenizer, aie_saved):
    """A function vector, an AIE or a ranking recorded on model A is refused on model B of the same shape."""
    from conftest import build_model

    from tlens_icl.errors import ModelMismatchError

    other = build_model("native", tokenizer, seed=11)  # same sizes, other weights
    aie, _ = aie_saved
    fv = ti.function_vector(native_model, aie, k=2)
    assert fv.info["model_fingerprint"] == aie.info["model_fingerprint"]
    with pytest.raises(ModelMismatchError, match="computed on model"):
        ti.function_vector(other, aie, k=2)
    with no_forward(other), pytest.raises(ModelMismatchError, match="vector was computed on model"):
        function_vector_sweep(other, fv, task_a, settings=("zero_shot",), n=2)
    with pytest.raises(ModelMismatchError):
        ti.head_ablation(other, task_a, {"FV": aie}, ks=(1,), n=2, n_shots=1, loss=False)
    with pytest.raises(ModelMismatchError):
        head_overlap({"FV": aie, "x": torch.rand(2, 4)}, model=other)
    # the same weights in another dtype are the same model; a tensor carries no identity and is taken as given
    from tlens_icl.models.fingerprint import model_fingerprint

    assert model_fingerprint(build_model("native", tokenizer).to(torch.float16)) == aie.info["model_fingerprint"]
    function_vector_sweep(other, fv.vector, task_a, settings=("zero_shot",), n=2, layers=[0])


def test_heads_family_and_other_probes_are_refused_by_name(native_model, task_a, aie_saved):
    """Issue 21's argument probes: each raises naming the argument, before any forward pass."""
    from tlens_icl.analyses.heads.ablation import random_heads
    from tlens_icl.prompts.pairs import PromptPairBatch

    aie, _ = aie_saved
    m = native_model
    other = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    pa = ti.make_prompt_pairs(m, task_a, n=3, n_shots=2, seed=0)
    pb = ti.make_prompt_pairs(m, task_a, n=3, n_shots=2, seed=7)
    two_heads = ti.indirect_effect(m, task_a, n_mean=2, n=2, n_shots=2, heads=[(0, 0), (1, 2)])
    probes = [
        (lambda: ti.head_ablation(m, task_a, {"a": aie}, ks=(1.0,), n=2, loss=False), "float k is a fraction"),
        (lambda: ti.head_ablation(m, task_a, {"a": aie}, ks=(1,), n_random=-1, n=2, loss=False), "n_random must be"),
        (lambda: ti.head_ablation(m, task_a, {}, ks=(1,), n=2, loss=False), "rankings must be a non-empty"),
        (lambda: head_overlap({"a": aie, "b": other}, ks=(1.7,)), r"ks\[0\] must be an int"),
        *[(lambda kd=kd: head_overlap({"a": aie, "b": other}, ks=(1,), k_depth=kd), "k_depth must be an int")
          for kd in (-1, 0, 1000)],
        (lambda: head_overlap({"a": aie, "b": torch.full((2, 4), math.nan)}, ks=(1,)), "scores 0 of 8 heads"),
        (lambda: ti.head_dynamics("icl-tiny", n=0), r"head_dynamics\(\): n must be"),
        (lambda: ti.make_prompts(m, "uppercase", n=2, n_shots=1, demos_from="bitwise_xor"), "another task"),
        (lambda: ti.head_patching(m, PromptPairBatch(pa.clean, pb.corrupted, pa.task, 2, "shuffled_labels", 0,
                                                     pa.template)), "unrelated"),
        (lambda: ti.head_scores(m, torch.arange(2, 22).reshape(2, 10)), "repeats an earlier one"),
        (lambda: ti.head_scores(m, torch.full((2, 6), 10**6)), "outside the vocabulary"),
        (lambda: ti.head_scores(m, torch.tensor([[1, 2, 3, 1, 2, 3]]), mask=torch.ones(2, 3)), "mask must have the shape"),
        (lambda: ti.Task.from_dataset({"input": ["a", None], "output": ["x", "y"]}, "nn"), "column 'input' is empty"),
        (lambda: ti.function_vector(m, two_heads, k=10), "measured only 2"),
        (lambda: ti.function_vector(m, "aie"), "mediation must be an IndirectEffectResult"),
        (lambda: random_heads(4, 8, 40, 0), "k must be an int in"),
        (lambda: function_vector_sweep(m, torch.ones(64), task_a, settings=()), "settings must be a non-empty"),
        (lambda: ti.token_loss_score(m, "text", texts=["a b c " * 40], length=1), "length must be an int >= 4"),
        (lambda: IndirectEffectResult.load(None), r"load\(\): path must be"),
        (lambda: aie.save(None), r"save\(\): path must be"),
        (lambda: ti.Task.from_json(123), "path must be"),
        (lambda: ti.Task.from_pairs("p", [("a",)]), r"pair 0 must be an \(input, output\)"),
        (lambda: ti.indirect_effect(m, task_a, n_mean=2, n=2, n_shots=2, mean_z="x"), "mean_z must be"),
        (lambda: head_attention_html(m, pa.clean, [(0, 1)], row=99), "row must be an int"),
        (lambda: ti.rsa(from_arrays(torch.randn(6, 1, 4), ["a", "b"] * 3), 123), "hypotheses must be a dict"),
        (lambda: ti.token_loss_score(m, "episodes", tasks=[], n=2, n_shots=2), "non-empty list of tasks"),
        (lambda: ti.attention_ratio(m, "x"), "prompts must be a PromptBatch"),
        (lambda: ti.SteeringVector.load(None), "path must be"),
        (lambda: ti.SteeringVector.from_soft_injection("x"), "si must be a tensor or a vector result"),
        (lambda: ti.SteeringVector.from_in_context_vector("x"), "icv must be a tensor or a vector result"),
        (lambda: ti.steer(m, "x").__enter__(), "steering must be a SteeringVector"),
        (lambda: ti.generate(m, "x", steering=ti.function_vector(m, aie, k=2)), "steering must be a SteeringVector"),
        (lambda: ti.compare_methods(m, [task_a], methods=()), "methods must be a non-empty"),
        (lambda: ti.function_vector(m, aie, k=2).with_layer(99), "layer must be an int >= 0 and <= 1"),
    ]
    with no_forward(m), without_typechecker():  # what a user sees (the suite's jaxtyping checker would answer first)
        for call, match in probes:
            with pytest.raises(TlensICLError, match=match):
                call()


def test_overlap_summary_averages_the_depth_of_the_heads_ranked():
    """The summary's mean depth is ``depth_table()``'s, whatever ``k_depth`` is."""
    ov = head_overlap({"a": torch.arange(8.0).reshape(2, 4), "b": -torch.arange(8.0).reshape(2, 4)}, ks=(1, 3),
                      k_depth=3)
    table = ov.depth_table().set_index("set").mean_depth
    assert f"a {table['a']:.2f}" in ov.summary() and f"b {table['b']:.2f}" in ov.summary()
    assert table["a"] == 1.0 and table["b"] == 0.0


def test_an_embedded_model_loads_in_the_dtype_asked_for():
    m = ti.load_model("icl-tiny", dtype=torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    with pytest.raises(ModelStateError, match="floating-point torch.dtype"):
        ti.load_model("icl-tiny", dtype="float16")
