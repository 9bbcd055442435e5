"""Causal mediation (Todd et al.): fast == naive on every architecture, hand-computed CIE, result views, CLI."""

from __future__ import annotations

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.causal.attribution import patching_fidelity
from tlens_icl.analyses.causal.mediation import IndirectEffectResult, head_attention_html
from tlens_icl.engine.capture import query_z
from tlens_icl.errors import EmptyTaskError, TlensICLError
from tlens_icl.prompts.spec import STREAMS, PromptSpec, stream_seed
from tlens_icl.results.base import tensors_equal
from tlens_icl.viz.html import BUNDLE_MARK

TOL = 1e-5
SMALL = dict(n_mean=4, n=3, n_shots=3)


def test_fast_equals_one_forward_per_head(any_model, task_a):
    fast = ti.indirect_effect(any_model, task_a, method="fast", **SMALL)
    naive = ti.indirect_effect(any_model, task_a, method="naive", **SMALL)
    assert fast.method == "fast" and naive.method == "naive"
    n_layers, n_heads = any_model.cfg.n_layers, any_model.cfg.n_heads
    assert fast.effects.shape == (1, n_layers, n_heads, 3)
    assert fast.mean_z.shape == (1, n_layers, n_heads, any_model.cfg.d_head)
    torch.testing.assert_close(fast.effects, naive.effects, atol=TOL, rtol=0)
    assert torch.equal(fast.mean_z, naive.mean_z) and torch.equal(fast.corrupted_metric, naive.corrupted_metric)


def test_streams_are_independent(native_model, task_a):
    """0.2 drew the mean prompts of seed s with seed s + 1: the clean prompts of a run with seed s + 1."""
    spec = PromptSpec((task_a,), n=4, n_shots=3, seed=0)
    mean = spec.prompts(native_model, "mean")
    next_clean = PromptSpec((task_a,), n=4, n_shots=3, seed=1).pairs(native_model).clean
    assert mean.prompts != next_clean.prompts
    assert mean.prompts != spec.pairs(native_model).clean.prompts
    seeds = [PromptSpec((task_a,), seed=s).seed_of(st) for s in range(50) for st in STREAMS]
    assert len(set(seeds)) == len(seeds)  # no stream of one seed is any stream of another
    res = ti.indirect_effect(native_model, spec, n_mean=4, method="naive")
    assert res.info["spec"]["stream_seeds"]["mean"] == spec.seed_of("mean")
    assert res.info["spec"]["sizes"] == {"mean": 4}


def test_spec_and_data_level_agree(native_model, task_a):
    """indirect_effect(tasks) == indirect_effect(spec) == indirect_effect(pairs, mean_prompts=...)."""
    spec = PromptSpec((task_a,), n=3, n_shots=3, seed=2)
    by_task = ti.indirect_effect(native_model, task_a, n_mean=4, n=3, n_shots=3, seed=2, method="naive")
    by_spec = ti.indirect_effect(native_model, spec, n_mean=4, method="naive")
    by_data = ti.indirect_effect(native_model, spec.pairs(native_model), method="naive",
                                 mean_prompts=spec.prompts(native_model, "mean", n=4))
    torch.testing.assert_close(by_task.effects, by_spec.effects, atol=0, rtol=0)
    torch.testing.assert_close(by_task.effects, by_data.effects, atol=0, rtol=0)
    with pytest.raises(TlensICLError, match="fixed by the PromptSpec"):
        ti.indirect_effect(native_model, spec, seed=5)
    with pytest.raises(TlensICLError, match="prompts were given"):
        ti.indirect_effect(native_model, spec.pairs(native_model), n_shots=2,
                           mean_prompts=spec.prompts(native_model, "mean", n=4))
    with pytest.raises(TlensICLError, match="mean_prompts"):
        ti.indirect_effect(native_model, spec.pairs(native_model))
    from conftest import without_typechecker

    with without_typechecker(), pytest.raises(TlensICLError, match="method must be one of"):  # what a user sees
        ti.indirect_effect(native_model, spec, method="fastest")


def test_mean_z_and_one_cie_by_hand(native_model, task_a):
    res = ti.indirect_effect(native_model, task_a, **SMALL)
    layer, head = 1, 3
    # mean hook_z at the query position over the clean mean prompts (the spec's "mean" stream)
    prompts = ti.make_prompts(native_model, task_a, n=4, n_shots=3, seed=stream_seed(0, "mean"))
    _, cache = native_model.run_with_cache(prompts.tokens, names_filter=f"blocks.{layer}.attn.hook_z")
    rows = torch.arange(len(prompts))
    z = cache[f"blocks.{layer}.attn.hook_z"][rows, prompts.query_pos]
    torch.testing.assert_close(res.mean_z[0, layer], z.mean(0), atol=1e-6, rtol=0)
    # CIE = P(answer | corrupted, z_head := mean) - P(answer | corrupted), per corrupted prompt
    pairs = ti.make_prompt_pairs(native_model, task_a, n=3, n_shots=3, seed=0)
    base = pairs.corrupted
    r = torch.arange(len(base))

    def put_mean(act, hook):
        act = act.clone()
        act[r, base.query_pos, head] = z.mean(0)[head]
        return act

    with torch.no_grad():
        patched = native_model.run_with_hooks(base.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", put_mean)])
        plain = native_model(base.tokens)
    p = lambda lg: lg[r, base.query_pos].softmax(-1)[r, base.answer_tokens]  # noqa: E731
    torch.testing.assert_close(res.effects[0, layer, head], p(patched) - p(plain), atol=TOL, rtol=0)
    torch.testing.assert_close(res.corrupted_metric[0], p(plain), atol=TOL, rtol=0)


def test_universal_ranking_averages_tasks(native_model, task_a, task_b):
    res = ti.indirect_effect(native_model, [task_a, task_b], **SMALL)
    assert res.tasks == ("toy_a", "toy_b")
    torch.testing.assert_close(res.mean(), (res.mean("toy_a") + res.mean("toy_b")) / 2)
    mean = res.mean()
    top = res.top_heads(5)
    assert [float(mean[h]) for h in top] == sorted((float(v) for v in mean.flatten()), reverse=True)[:5]
    assert res.top_heads(2, task="toy_b") == ti.indirect_effect(native_model, task_b, **SMALL).top_heads(2)
    lo, hi = res.ci()
    assert lo.shape == mean.shape and bool((lo <= mean + 1e-7).all() and (mean <= hi + 1e-7).all())
    with pytest.raises(TlensICLError, match="not in this result"):
        res.mean("toy_c")


def test_zero_shot_corruption_patches_the_query_only(native_model, task_a):
    res = ti.indirect_effect(native_model, task_a, corruption="zero_shot", method="fast", **SMALL)
    naive = ti.indirect_effect(native_model, task_a, corruption="zero_shot", method="naive", **SMALL)
    torch.testing.assert_close(res.effects, naive.effects, atol=TOL, rtol=0)


def test_attribution_estimates_the_same_quantity(native_model, task_a):
    exact = ti.indirect_effect(native_model, task_a, **SMALL)
    approx = ti.indirect_effect(native_model, task_a, method="attribution", **SMALL)
    assert approx.method == "attribution" and approx.effects.shape == exact.effects.shape
    assert torch.equal(approx.mean_z, exact.mean_z)
    torch.testing.assert_close(approx.corrupted_metric, exact.corrupted_metric, atol=TOL, rtol=0)
    # the same corrupted prompts as the exact run, patched with the same task mean
    pairs = ti.make_prompt_pairs(native_model, task_a, n=3, n_shots=3, seed=0)
    direct = ti.attribution_patching(native_model, pairs, values=exact.mean_z[0])
    torch.testing.assert_close(approx.effects[0], direct.effects, atol=1e-7, rtol=0)
    assert patching_fidelity(approx, exact, k=4).n_heads == 8


@pytest.mark.parametrize("metric", ["top1", "rank"])
def test_attribution_refuses_a_metric_without_a_gradient_before_any_forward(native_model, task_a, forward_counter, metric):
    with pytest.raises(TlensICLError, match="no gradient"):
        ti.indirect_effect(native_model, task_a, method="attribution", metric=metric, **SMALL)
    assert forward_counter == []


def test_result_views_round_trip_and_html(native_model, task_a, tmp_path):
    res = ti.indirect_effect(native_model, task_a, **SMALL)
    assert tensors_equal(res, IndirectEffectResult.load(res.save(tmp_path / "ie")))
    assert res.info["model"] and res.info["transformer_lens"] and res.info["seed"] == 0
    df = res.to_dataframe()
    assert len(df) == 8 and {"task", "layer", "head", "AIE", "ci_low", "ci_high"} <= set(df.columns)
    assert list(res.top_table(3)["head"]) == [str(h) for h in res.top_heads(3)]
    html = res._repr_html_()
    assert "Average indirect effect" in html and "<img" in html
    fig = res.plot(k=2)
    outlines = [p for p in fig.axes[0].patches if tuple(p.get_edgecolor()[:3]) == (0.0, 0.0, 0.0)]
    assert len(outlines) == 2  # the top-2 heads are outlined


def test_head_attention_html_is_offline_and_shows_roles(native_model, task_a, tmp_path):
    prompts = ti.make_prompts(native_model, task_a, n=1, n_shots=2)
    view = head_attention_html(native_model, prompts, [ti.Head(1, 2), ti.Head(0, 0)], path=tmp_path / "a.html")
    page = view.page()
    assert "unpkg.com" not in page and "L1H2" in page and "|y" in page and "|qx" in page
    assert page.count(".render(") == 1 and page.count(BUNDLE_MARK) == 1  # bundle inlined once
    saved = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert saved.count(BUNDLE_MARK) == 1 and "L1H2" in saved
    assert len(repr(view)) < 200 and "L1H2" in view._repr_html_()  # Jupyter renders it; the repr is one line


def test_bad_input_raises_before_any_forward(native_model, task_a, monkeypatch):
    monkeypatch.setattr(type(native_model), "forward", lambda *a, **k: pytest.fail("forward ran"))
    with pytest.raises(TlensICLError, match="method"):
        ti.indirect_effect(native_model, task_a, method="magic", **SMALL)
    with pytest.raises(TlensICLError, match="corruption"):
        ti.indirect_effect(native_model, task_a, corruption="scrambled", **SMALL)
    with pytest.raises(TlensICLError, match="other_task"):
        ti.indirect_effect(native_model, task_a, corruption="other_task_labels", **SMALL)
    with pytest.raises(TlensICLError, match="at least one task"):
        ti.indirect_effect(native_model, [], **SMALL)


def test_cli_mediate_writes_heatmap_top_heads_and_result(tokenizer, task_a, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tlens_icl import cli

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0))
    hf.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    ti.register_task(ti.Task.from_pairs("toy_cli", [(i.input, i.output) for i in task_a.items]), overwrite=True)
    out = tmp_path / "out"
    code = cli.main(["mediate", "--model", str(tmp_path / "model"), "toy_cli", "--shots", "2",
                     "--n-mean", "3", "--n-corrupted", "2", "--top-k", "3", "--out", str(out)])
    assert code == 0
    assert {"aie.png", "aie.csv", "top_heads.csv", "attention.html", "index.html"} <= {p.name for p in out.iterdir()}
    res = IndirectEffectResult.load(out)
    assert res.tasks == ("toy_cli",) and res.effects.shape[-1] == 2
    assert "top heads" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_head_subset_equals_the_cells_of_the_full_run(any_model, task_a, method):
    check_head_subset(any_model, task_a, method)


def test_head_subset_with_attribution(native_model, task_a):
    check_head_subset(native_model, task_a, "attribution")


def check_head_subset(any_model, task_a, method):
    last = (any_model.cfg.n_layers - 1, any_model.cfg.n_heads - 1)
    mask = torch.zeros(any_model.cfg.n_layers, any_model.cfg.n_heads, dtype=torch.bool)
    mask[last] = mask[0, 0] = True
    full = ti.indirect_effect(any_model, task_a, method=method, **SMALL)
    part = ti.indirect_effect(any_model, task_a, method=method, heads=[ti.Head(0, 0), last], **SMALL)
    assert part.method == method
    atol = 0.0 if method != "fast" else 1e-6  # fast: fewer query copies, float32 summation order only
    torch.testing.assert_close(part.effects[:, mask], full.effects[:, mask], atol=atol, rtol=0)
    assert bool(part.effects[:, ~mask].isnan().all())
    assert torch.equal(part.mean_z, full.mean_z) and torch.equal(part.corrupted_metric, full.corrupted_metric)
    assert set(part.top_heads(10)) == {ti.Head(0, 0), ti.Head(*last)}
    assert part.info["heads"] == ["L0H0", str(ti.Head(*last))] and full.info["heads"] is None


def biased_model(tokenizer, token: str):
    """A tiny native model whose unembedding bias makes ``token`` its top-1 prediction everywhere."""
    from conftest import build_model

    model = build_model("native", tokenizer)
    with torch.no_grad():
        model.b_U[tokenizer.convert_tokens_to_ids(token)] += 1e4
    return model


def two_label_task(name: str, even: str, odd: str) -> ti.Task:
    return ti.Task.from_pairs(name, [(f"in{i}", even if i % 2 == 0 else odd) for i in range(24)])


def test_filter_correct_keeps_exactly_the_correctly_answered_prompts(word_tokenizer):
    tokenizer = word_tokenizer  # a model whose top-1 is the single token 'a0'
    model = biased_model(tokenizer, "a0")  # correct exactly where the answer is a0
    task, other = two_label_task("toy_even", "a0", "a1"), two_label_task("toy_even3", "a0", "a3")
    # two labels and 2 shots: shuffling cannot change a prompt whose demos agree, random labels always can
    kw = dict(n_mean=8, n=8, n_shots=2, seed=0, metric="top1", corruption="random_labels")
    res = ti.indirect_effect(model, [task, other], filter_correct=True, method="naive", **kw)
    assert res.info["filter_correct"] is True
    a0 = tokenizer.convert_tokens_to_ids("a0")
    for t, name in enumerate(res.tasks):
        pairs = ti.make_prompt_pairs(model, [task, other][t], n=8, n_shots=2, seed=0, corruption="random_labels")
        prompts = ti.make_prompts(model, [task, other][t], n=8, n_shots=2, seed=stream_seed(0, "mean"))
        rows = torch.arange(8)
        with torch.no_grad():  # by hand: top-1 of the clean prompt == first answer token
            ok = model(pairs.clean.tokens)[rows, pairs.clean.query_pos].argmax(-1) == pairs.clean.answer_tokens
            ok_mean = model(prompts.tokens)[rows, prompts.query_pos].argmax(-1) == prompts.answer_tokens
        assert torch.equal(ok, pairs.clean.answer_tokens == a0) and 0 < int(ok.sum()) < 8  # a real mix
        kept = ok.nonzero().flatten().tolist()
        assert res.info["kept"][name] == kept and res.info["n_kept"][name] == len(kept)
        assert res.info["n_mean_kept"][name] == int(ok_mean.sum())
        n = len(kept)
        assert torch.equal(res.clean_metric[t, :n], torch.ones(n))  # every kept clean prompt is answered correctly
        assert bool(res.clean_metric[t, n:].isnan().all() and res.effects[t, ..., n:].isnan().all())
        assert not bool(res.effects[t, ..., :n].isnan().any())
        # the mean activation averages only the correctly answered clean prompts
        z, _ = query_z(model, prompts.tokens, prompts.query_pos, batch_size=8)
        torch.testing.assert_close(res.mean_z[t], z[ok_mean].mean(0), atol=1e-6, rtol=0)
        # and the kept pairs are scored against their own answers: the data level on exactly those pairs agrees
        ref = ti.indirect_effect(model, pairs.select(ok.nonzero().flatten()), mean_z=res.mean_z[t], metric="top1",
                                 method="naive")
        assert torch.equal(res.effects[t, ..., :n], ref.effects[0])
        assert torch.equal(res.corrupted_metric[t, :n], ref.corrupted_metric[0])
    # padding is ignored: the multi-task AIE is the mean of the per-task AIEs over kept prompts
    single = ti.indirect_effect(model, other, filter_correct=True, method="naive", **kw)
    torch.testing.assert_close(res.mean("toy_even3"), single.mean(), atol=1e-7, rtol=0)
    lo, hi = res.ci()
    assert not bool(lo.isnan().any() or hi.isnan().any())
    assert set(res.to_dataframe()["n"]) == set(res.info["n_kept"].values())


def test_filter_correct_raises_when_no_prompt_survives(word_tokenizer):
    tokenizer = word_tokenizer  # a model whose top-1 is the single token 'a0'
    model = biased_model(tokenizer, "a5")  # never an answer of this task
    with pytest.raises(EmptyTaskError, match="filter_correct"):
        ti.indirect_effect(model, two_label_task("toy_even", "a0", "a1"), filter_correct=True, **SMALL)


def test_cli_mediate_heads_and_filter_correct(word_tokenizer, tmp_path, capsys, monkeypatch):
    tokenizer = word_tokenizer
    from tlens_icl import cli

    model = biased_model(tokenizer, "a0")
    monkeypatch.setattr("tlens_icl.models.load_model", lambda name: model)
    ti.register_task(two_label_task("toy_cli_even", "a0", "a1"), overwrite=True)
    out = tmp_path / "out"
    code = cli.main(["mediate", "--model", "in-memory", "toy_cli_even", "--shots", "2", "--n-mean", "8",
                     "--n-corrupted", "4", "--heads", "1.3", "0.2", "--filter-correct", "--top-k", "2",
                     "--corruption", "random_labels",
                     "--out", str(out)])
    assert code == 0
    res = IndirectEffectResult.load(out)
    assert res.info["heads"] == ["L1H3", "L0H2"] and res.info["filter_correct"] is True
    assert set(res.top_heads(8)) == {ti.Head(1, 3), ti.Head(0, 2)}
    assert "kept" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["mediate", "--model", "x", "--task", "t", "--heads", "1:3", "--out", str(out)])
