"""The Python session a researcher meets in the second hour (issue 24): dropped items are announced, a template the
tokenizer cannot write is named, any saved result loads with ``tlens_icl.load``, ``save`` does not overwrite by
accident, ``batch.prompts`` goes straight into TransformerLens, activations from a cache keep the task's name,
padded batches generate, and a decodability ``k`` larger than the prompts is said."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tlens_icl as ti
from tlens_icl.errors import ItemsDroppedWarning, PromptError, ResultFileError, TlensICLError

ROOT = Path(__file__).resolve().parent.parent


def test_dropped_items_are_announced_with_count_and_example(word_model):
    from conftest import WORD_INPUTS, WORD_OUTPUTS_A

    pairs = list(zip(WORD_INPUTS[:14], WORD_OUTPUTS_A[:14])) + [(f"zq{i}", WORD_OUTPUTS_A[i]) for i in range(6)]
    task = ti.Task.from_pairs("twenty", pairs)
    with pytest.warns(ItemsDroppedWarning, match=r"'twenty': 6 of 20 items left out: 6 contain tokens unknown .*'zq0'"):
        batch = ti.make_prompts(word_model, task, n=4, n_shots=2)
    assert batch.item_counts["usable"] == 14
    with warnings.catch_warnings():  # every item usable: silent
        warnings.simplefilter("error", ItemsDroppedWarning)
        ti.make_prompts(word_model, ti.Task.from_pairs("fourteen", pairs[:14]), n=4, n_shots=2)


def test_the_embedded_models_own_word_pool_is_not_a_surprise(embedded_model):
    """icl-tiny's card defines a word task's pool as the words it knows: no warning there, but one for a task it
    was never trained on."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ItemsDroppedWarning)
        ti.make_prompts(embedded_model, "uppercase", n=2, n_shots=1)
    with pytest.warns(ItemsDroppedWarning, match="'antonym'"):
        ti.make_prompts(embedded_model, "antonym", n=2, n_shots=1)


def test_a_template_the_tokenizer_cannot_write_is_named(word_model, word_task_a, embedded_model):
    tpl = ti.PromptTemplate("query_words", input_prefix="Query: ", input_suffix=" =>")
    with pytest.raises(PromptError, match=r"Template 'query_words'.*input_prefix 'Query: '.*input_suffix ' =>'"):
        ti.make_prompts(word_model, word_task_a, n=2, n_shots=1, template=tpl)
    with pytest.raises(PromptError, match=r"Template 'qa'.*own template is 'arrow'"):
        ti.make_prompts(embedded_model, "bitwise_xor", n=2, n_shots=1, template="qa")


def _small_result():
    from test_figures import decodability

    return decodability()


def test_load_dispatches_on_the_saved_class_in_a_fresh_process(tmp_path):
    res = _small_result()
    res.save(tmp_path / "cd")
    run = subprocess.run([sys.executable, "-c", f"import tlens_icl as ti; r = ti.load({str(tmp_path / 'cd')!r}); "
                          "print(type(r).__name__, r.k)"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["DecodabilityResult", str(res.k)]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"schema": 1, "class": "Path", "fields": {}}')
    with pytest.raises(ResultFileError, match="'Path', which is not a tlens_icl result class"):
        ti.load(tmp_path / "other")


def test_save_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    res = _small_result()
    res.save(tmp_path / "cd")
    before = (tmp_path / "cd" / "meta.json").read_text()
    for call in (lambda: res.save(tmp_path / "cd"), lambda: res.export(tmp_path / "cd", "cd")):
        with pytest.raises(TlensICLError, match="not empty.*overwrite=True"):
            call()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("x")
    with pytest.raises(TlensICLError, match="not empty"):
        res.save(tmp_path / "notes")
    assert (tmp_path / "cd" / "meta.json").read_text() == before
    res.save(tmp_path / "cd", overwrite=True)
    res.export(tmp_path / "notes", "cd", overwrite=True)
    assert (tmp_path / "notes" / "mine.txt").exists() and type(ti.load(tmp_path / "notes")) is type(res)


def test_batch_prompts_go_into_run_with_cache(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=3, n_shots=2)
    logits, cache = native_model.run_with_cache(batch.prompts)
    assert logits.shape[0] == 3 and torch.equal(logits, native_model(list(batch.prompts)))
    assert batch.prompts == tuple(batch.prompts) and batch.prompts == list(batch.prompts)
    with pytest.raises(TypeError, match="read-only"):
        batch.prompts.append("x")
    assert batch.select([1]).prompts == (batch.prompts[1],)


def test_activations_from_a_cache_carry_the_batchs_task(native_model, task_a):
    batch = ti.make_prompts(native_model, task_a, n=3, n_shots=2)
    _, cache = native_model.run_with_cache(batch.tokens)
    acts = ti.collect_activations(native_model, batch, cache=cache)
    assert batch.task == "toy_a" and set(acts.labels("task")) == {"toy_a"}
    assert set(ti.collect_activations(native_model, batch).labels("task")) == {"toy_a"}


@pytest.mark.parametrize("arch", ["native", "gpt2"])  # native generates without a KV cache, GPT-2 with one
def test_generate_on_a_padded_batch_equals_each_row_alone(arch, tokenizer, task_a):
    from conftest import build_model

    model = build_model(arch, tokenizer)
    batch = ti.make_prompts(model, task_a, n=4, n_shots=2, seed=1)
    lengths = batch.attention_mask.sum(1).tolist()
    assert len(set(lengths)) > 1  # rows of different lengths: the batch is padded
    v = 3 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    sv = ti.SteeringVector(v, 1)
    out = ti.generate(model, batch, steering=sv, max_new_tokens=3, stop_at_eos=False)
    assert out.shape[0] == 4
    for i, n in enumerate(lengths):
        alone = ti.generate(model, batch.tokens[i : i + 1, :n], steering=sv, max_new_tokens=3, stop_at_eos=False)
        assert out[i, : n + 3].tolist() == alone[0].tolist(), f"row {i}"
    same = ti.generate(model, batch.tokens, steering=sv, attention_mask=batch.attention_mask, max_new_tokens=3,
                       stop_at_eos=False)
    assert torch.equal(same, out)
    with pytest.raises(TlensICLError, match="right padding"):
        ti.generate(model, batch.tokens, steering=sv, attention_mask=batch.attention_mask.flip(1))


def test_decodability_says_when_k_exceeds_the_prompts(native_model, task_a, task_b):
    acts = ti.task_activations(native_model, [task_a, task_b], shots=(0, 2), n=4)
    with pytest.warns(UserWarning, match=r"k=1000 neighbours asked, but each shot count has only 8 prompts: k=7"):
        res = ti.concept_decodability(acts, k=1000)
    assert res.k == 7 and "k=1000 asked; capped" in res.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "capped" not in ti.concept_decodability(acts, k=3).summary()
