"""Heads family: head scores, mean ablation, exclusion, overlap, token-loss score (tests/test_heads_training.py:
checkpoints and dynamics)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import INPUTS, OUTPUTS_A, build_model

from tlens_icl import Head, Task, head_ablation, head_scores, make_prompts
from tlens_icl.analyses.heads.ablation import select_heads
from tlens_icl.analyses.heads.overlap import head_overlap
from tlens_icl.analyses.heads.scores import detection_targets, repeated_random_tokens
from tlens_icl.engine.ablation import (
    ablated_query_logits,
    ablated_token_losses,
    ablation_positions,
    ablation_sweep,
    mean_head_z,
    query_reduce,
)
from tlens_icl.engine.runs import query_logits
from tlens_icl.errors import HookNotFiredError, TlensICLError

# ---- a hand-built attention-only model with a planted previous-token head and induction head ---------
P = 40  # n_ctx


def planted_model(tokenizer, c: float = 40.0):
    """L0H0 attends to the previous position and writes the previous token; L1H0 attends to the key whose
    previous token equals the current token (induction) and writes that key's token to the unembedding.
    L0H1 and L1H1 are zero (uniform attention, no output). Residual: [token | position | prev token | out]."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    V = len(tokenizer)
    d_head = max(V, P)
    TOK, POS, PREV, OUT = 0, V, V + P, 2 * V + P
    d_model = 3 * V + P
    cfg = TransformerBridgeConfig(d_model=d_model, d_head=d_head, n_heads=2, n_layers=2, n_ctx=P, d_vocab=V,
                                  act_fn="gelu", attn_only=True, normalization_type=None,
                                  positional_embedding_type="standard", seed=0)
    model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer).eval()
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    scale = c * math.sqrt(d_head)
    sd["embed.weight"][torch.arange(V), TOK + torch.arange(V)] = 1.0
    sd["pos_embed.weight"][torch.arange(P), POS + torch.arange(P)] = 1.0
    # L0H0: previous-token head
    for i in range(P - 1):
        sd["blocks.0.attn.q.weight"][i, POS + i + 1] = scale
        sd["blocks.0.attn.k.weight"][i, POS + i] = 1.0
    for j in range(V):
        sd["blocks.0.attn.v.weight"][j, TOK + j] = 1.0
        sd["blocks.0.attn.o.weight"][PREV + j, j] = 1.0
        # L1H0: induction head
        sd["blocks.1.attn.q.weight"][j, TOK + j] = scale
        sd["blocks.1.attn.k.weight"][j, PREV + j] = 1.0
        sd["blocks.1.attn.v.weight"][j, TOK + j] = 1.0
        sd["blocks.1.attn.o.weight"][OUT + j, j] = 1.0
        sd["unembed.weight"][j, OUT + j] = 1.0
    model.load_state_dict(sd, strict=True)
    return model


@pytest.fixture(scope="module")
def planted(tokenizer):
    return planted_model(tokenizer)


def _padded(seqs, pad):
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad)
    mask = torch.zeros_like(tokens)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return tokens, mask


def test_planted_heads_score_one_exactly_there(planted, tokenizer):
    # variable-length repeated sequences in one right-padded batch
    rep = repeated_random_tokens(planted, n=6, length=18, seed=1)
    seqs = [rep[i, : 1 + n].tolist() + rep[i, : 1 + n].tolist()[1:] for i, n in enumerate([18, 9, 14, 6, 18, 11])]
    tokens, mask = _padded(seqs, tokenizer.pad_token_id)
    res = head_scores(planted, tokens, mask=mask)
    ind, prev = res.induction(), res.previous_token()
    assert ind[1, 0] > 0.97 and prev[0, 0] > 0.97
    others_ind = [float(ind[h]) for h in [(0, 0), (0, 1), (1, 1)]]
    others_prev = [float(prev[h]) for h in [(0, 1), (1, 0), (1, 1)]]
    assert max(others_ind) < 0.3 and max(others_prev) < 0.3, (ind, prev)
    assert res.top_heads(1, "induction") == [Head(1, 0)] and res.top_heads(1, "previous_token") == [Head(0, 0)]
    # padding changes nothing: each row alone gives the same scores
    for i, s in enumerate(seqs[:3]):
        alone = head_scores(planted, torch.tensor([s]))
        torch.testing.assert_close(alone.scores[..., 0], res.scores[..., i], atol=1e-5, rtol=0)
    # the planted induction head predicts the second half (logits through the unembedding)
    logits = planted(rep)
    half = 18
    pred = logits[:, 1 + half : -1].argmax(-1)
    assert torch.equal(pred, rep[:, 2 + half :])


def test_detection_targets_by_hand():
    toks = torch.tensor([[1, 7, 8, 9, 7, 8, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    targets, rows = detection_targets(toks, mask)
    ind, prev, dup = targets[:, 0]
    assert ind.nonzero().tolist() == [[4, 2], [5, 3]]  # 7 at 4 -> after its earlier copy (2); 8 at 5 -> 3
    assert dup.nonzero().tolist() == [[4, 1], [5, 2]]
    assert prev.nonzero().tolist() == [[q, q - 1] for q in range(1, 6)]
    assert rows[0, 0].nonzero().flatten().tolist() == [4, 5]


@pytest.mark.parametrize("arch", ["planted", "native", "gemma3", "qwen2"])
def test_rows_all_equals_transformer_lens_head_detector(arch, planted, tokenizer):
    from transformer_lens.head_detector import detect_head

    model = planted if arch == "planted" else build_model(arch, tokenizer, n_ctx=P)
    words = [w for w in INPUTS + OUTPUTS_A if len(tokenizer.tokenize(" " + w)) == 1][:20]  # fits n_ctx=P with BPE
    texts = [" ".join(words[i : i + 7] * 2) for i in range(0, 12, 3)] + [" ".join((words[:5] + words[3:9]) * 2)]
    tokens = [model.to_tokens(t)[0] for t in texts]
    batch, mask = _padded([t.tolist() for t in tokens], tokenizer.pad_token_id)
    ours = head_scores(model, batch, mask=mask, rows="all")
    for c, kind in enumerate(("induction_head", "previous_token_head", "duplicate_token_head")):
        ref = detect_head(model, texts, kind, error_measure="mul")
        torch.testing.assert_close(ours.scores[c].mean(-1), ref.float(), atol=2e-5, rtol=0)


# ---- mean ablation ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def var_task():
    """Inputs of 1-3 tokens: prompts of different lengths in one batch."""
    pairs = [(" ".join([INPUTS[i]] + ["x"] * (i % 3)), OUTPUTS_A[i]) for i in range(len(INPUTS))]
    return Task.from_pairs("toy_var", pairs, category="custom")


@pytest.fixture(scope="module", params=["native", "llama"])
def ab_model(request, tokenizer):
    return build_model(request.param, tokenizer, seed=3)


def _nonzero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
    return model


def test_mean_ablation_equals_hand_written_hook(ab_model, var_task):
    model = _nonzero_biases(ab_model)
    batch = make_prompts(model, var_task, n=7, n_shots=3, seed=2)
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1
    heads = [Head(0, 1), Head(1, 0), Head(1, 3)]
    where = ablation_positions(batch, "all")
    means = mean_head_z(model, batch.tokens, where, batch_size=3)
    # reference mean: each prompt alone, unpadded, positions 1.. (BOS excluded)
    acc, count = 0.0, 0
    for i in range(len(batch)):
        n = int(batch.attention_mask[i].sum())
        _, cache = model.run_with_cache(batch.tokens[i : i + 1, :n])
        zs = torch.stack([cache[f"blocks.{layer}.attn.hook_z"][0, 1:n] for layer in range(model.cfg.n_layers)], 1)
        acc, count = acc + zs.double().sum(0), count + n - 1
    torch.testing.assert_close(means, (acc / count).float(), atol=1e-5, rtol=0)

    def plain(layer):
        def fn(z, hook):
            z = z.clone()
            for i in range(z.shape[0]):
                n = int(batch.attention_mask[i].sum())
                for h in [h for (ly, h) in heads if ly == layer]:
                    z[i, 1:n, h] = means[layer, h]
            return z
        return fn

    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{ly}.attn.hook_z", plain(ly)) for ly in (0, 1)]):
        logits = model(batch.tokens)
    ref = logits[torch.arange(len(batch)), batch.query_pos]
    ours = ablated_query_logits(model, batch, heads, means, positions="all", batch_size=3)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    assert (ours - query_logits(model, batch)).abs().max() > 1e-3  # the ablation does something

    # query position only
    qmeans = mean_head_z(model, batch.tokens, ablation_positions(batch, "query"))
    def at_query(layer):
        def fn(z, hook):
            z = z.clone()
            for i in range(z.shape[0]):
                for h in [h for (ly, h) in heads if ly == layer]:
                    z[i, int(batch.query_pos[i]), h] = qmeans[layer, h]
            return z
        return fn
    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{ly}.attn.hook_z", at_query(ly)) for ly in (0, 1)]):
        ref_q = model(batch.tokens)[torch.arange(len(batch)), batch.query_pos]
    torch.testing.assert_close(ablated_query_logits(model, batch, heads, qmeans, positions="query"), ref_q,
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["native", "llama", "gpt2", "gemma3", "qwen2"])
def test_sweep_starts_each_set_at_its_first_layer_exactly(arch, tokenizer, var_task):
    """Many head sets in one sweep (each from its first ablated layer, after a shared clean run) equal hand-written
    hooks on full forwards, on prompts of different lengths; the early blocks really are skipped, with no fallback."""
    import warnings

    model = _nonzero_biases(build_model(arch, tokenizer, n_layers=4, seed=7))
    batch = make_prompts(model, var_task, n=7, n_shots=3, seed=5)
    where = ablation_positions(batch, "all")
    means = mean_head_z(model, batch.tokens, where, batch_size=3)
    sets = [[], [Head(2, 1)], [Head(1, 0), Head(3, 2)], [Head(3, 3)], [Head(0, 2), Head(2, 0)]]
    first = 1 if batch.prepend_bos else 0  # every real token but a BOS (Qwen2 prepends none)

    def hand(heads):
        def make(layer):
            def fn(z, hook):
                z = z.clone()
                for i in range(z.shape[0]):
                    n = int(batch.attention_mask[i].sum())
                    for h in [h for (ly, h) in heads if ly == layer]:
                        z[i, first:n, h] = means[layer, h]
                return z
            return fn
        with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{ly}.attn.hook_z", make(ly)) for ly in range(4)]):
            return model(batch.tokens)[torch.arange(len(batch)), batch.query_pos]

    fired = [0]

    def count(z, hook):
        fired[0] += 1

    with warnings.catch_warnings(record=True) as caught, model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", count)]):
        warnings.simplefilter("always")
        got = ablation_sweep(model, batch.tokens, batch.query_pos, where, sets, means,
                             query_reduce(batch, lambda lg, rows: lg), batch_size=3)
    assert not [w for w in caught if "ablation" in str(w.message)], [str(w.message) for w in caught]
    n_chunks = math.ceil(len(batch) / 3)
    # block 0 runs in each chunk's clean run and in the set that ablates a layer-0 head - nowhere else
    assert fired[0] == 2 * n_chunks
    for heads, ours in zip(sets, got):
        torch.testing.assert_close(ours, hand(heads), atol=1e-4, rtol=0)
    naive = ablation_sweep(model, batch.tokens, batch.query_pos, where, sets, means,
                           query_reduce(batch, lambda lg, rows: lg), batch_size=3, method="naive")
    for a, b in zip(got, naive):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_ablating_zero_heads_equals_the_unablated_run(native_model, var_task):
    batch = make_prompts(native_model, var_task, n=6, n_shots=3, seed=4)
    means = torch.randn(native_model.cfg.n_layers, native_model.cfg.n_heads, native_model.cfg.d_head)
    assert torch.equal(ablated_query_logits(native_model, batch, [], means), query_logits(native_model, batch))
    losses = ablated_token_losses(native_model, batch.tokens, batch.attention_mask, [], means)
    logits = native_model(batch.tokens)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten(),
                                            reduction="none").reshape(len(batch), -1)
    real = batch.attention_mask[:, 1:] == 1
    torch.testing.assert_close(losses[real], ref[real], atol=1e-5, rtol=0)
    assert losses[~real].isnan().all()
    res = head_ablation(native_model, [var_task], {"a": torch.rand(2, 4), "b": torch.rand(2, 4)}, ks=(0, 2),
                        n_random=2, n=6, n_shots=3, seed=4, loss=False)
    from tlens_icl.engine.scoring import accepted_top1

    plain = accepted_top1(query_logits(native_model, batch), batch.accepted)
    for m in range(len(res.methods)):
        for s in range(2 if res.methods[m] == "random" else 1):
            assert torch.equal(res.correct[m, 0, s, 0], plain)


def test_ablation_hooks_are_checked(native_model, var_task):
    batch = make_prompts(native_model, var_task, n=2, n_shots=2)
    means = torch.zeros(2, 4, native_model.cfg.d_head)
    with pytest.raises(TlensICLError):
        ablated_query_logits(native_model, batch, [Head(5, 0)], means)
    from tlens_icl.engine import ablation as eng

    hooks = eng.mean_ablation_hooks(native_model, [Head(1, 0)], means)
    from tlens_icl.engine.hooks import checked_hooks
    with pytest.raises(HookNotFiredError), checked_hooks(native_model, hooks):
        native_model(batch.tokens, stop_at_layer=1)


# ---- head selection with exclusion ----------------------------------------------------------------------
def test_exclusion_removes_exactly_the_requested_heads():
    g = torch.Generator().manual_seed(0)
    fv = torch.rand(5, 10, generator=g)  # 50 heads
    ind = torch.rand(5, 10, generator=g)
    order_fv = [Head(int(i) // 10, int(i) % 10) for i in torch.argsort(-fv.flatten())]
    order_ind = [Head(int(i) // 10, int(i) % 10) for i in torch.argsort(-ind.flatten())]
    # make the top-3 induction heads also strong FV heads
    for h in order_ind[:3]:
        fv[h] = 2.0 + ind[h]
    order_fv = [Head(int(i) // 10, int(i) % 10) for i in torch.argsort(-fv.flatten())]
    assert select_heads(fv, 5) == order_fv[:5]
    got = select_heads(fv, 5, exclude_scores=ind, exclude=0.06)  # floor(0.06 * 50) = 3 heads excluded
    assert got == [h for h in order_fv if h not in order_ind[:3]][:5]
    assert not set(got) & set(order_ind[:3])
    assert len(select_heads(fv, 0.1)) == 5  # a fraction of 50 heads
    assert select_heads(fv, 5, exclude_scores=ind, exclude=0.01) == order_fv[:5]  # floor(0.5) = 0 excluded
    with pytest.raises(TlensICLError):
        select_heads(fv, 5, exclude=0.1)


def test_head_ablation_exclusion_plan(native_model, var_task):
    fv = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.7, 0.2, 0.3, 0.05]])
    ind = torch.tensor([[0.95, 0.0, 0.1, 0.2], [0.1, 0.0, 0.3, 0.9]])
    res = head_ablation(native_model, [var_task], {"FV": fv, "induction": ind}, ks=(0, 2), exclude=0.25,
                        n_random=0, n=4, n_shots=2, loss=False)
    # 25 % of 8 heads = 2: FV drops L0H0, L1H3; induction drops L0H0, L0H1
    assert res.heads["FV"][1][0] == ["L0H1", "L1H0"]
    assert res.heads["induction"][1][0] == ["L1H3", "L1H2"]
    assert res.methods == ("FV", "induction")


def test_head_ablation_by_task_by_spec_and_by_prompts_agree(embedded_model):
    """The task level is a thin wrapper: tasks, a PromptSpec and the prompts themselves give one result (on the
    trained embedded model, where accuracy depends on which prompts are drawn)."""
    from tlens_icl.prompts.spec import PromptSpec

    fv = torch.arange(32.0).reshape(4, 8)
    kw = dict(ks=(0, 2), n_random=1, loss=False)
    by_task = head_ablation(embedded_model, ["bitwise_xor"], {"FV": fv}, n=8, n_shots=2, seed=3, **kw)
    spec = PromptSpec(("bitwise_xor",), n=8, n_shots=2, seed=3)
    by_spec = head_ablation(embedded_model, spec, {"FV": fv}, **kw)
    by_data = head_ablation(embedded_model, [spec.prompts(embedded_model, "clean")], {"FV": fv}, seed=3, **kw)
    other = head_ablation(embedded_model, [spec.prompts(embedded_model, "mean")], {"FV": fv}, seed=3, **kw)
    assert not torch.equal(by_task.correct, other.correct)  # the prompts drawn matter here
    assert torch.equal(by_task.correct, by_spec.correct) and torch.equal(by_task.correct, by_data.correct)
    assert by_task.heads == by_spec.heads == by_data.heads and by_data.n_shots == 2
    assert by_spec.info["spec"]["seed"] == 3 and "spec" not in by_data.info
    with pytest.raises(TlensICLError, match="fixed by the PromptSpec"):
        head_ablation(embedded_model, spec, {"FV": fv}, n=5, **kw)
    with pytest.raises(TlensICLError, match="prompts were given"):
        head_ablation(embedded_model, [spec.prompts(embedded_model, "clean")], {"FV": fv}, n_shots=3, **kw)


# ---- overlap ----------------------------------------------------------------------------------------
def test_overlap_against_hypergeometric_chance():
    from scipy.stats import hypergeom

    a = torch.arange(20.0).reshape(4, 5)
    b = a.flip(0).clone()
    b[3, 4] = 100.0  # b's top-1 is a's top-1
    res = head_overlap({"a": a, "b": b, "c": -a}, ks=(1, 5))
    assert res.pairs == (("a", "b"), ("a", "c"), ("b", "c"))
    assert res.overlap[0].tolist() == [1, 1] and res.overlap[1].tolist() == [0, 0]
    torch.testing.assert_close(res.expected, torch.tensor([1 / 20, 25 / 20]))
    assert math.isclose(float(res.p_value[0, 0]), hypergeom.sf(0, 20, 1, 1), rel_tol=1e-5)
    assert res.depth("a", 3) == [1.0, 1.0, 1.0] and res.depth("c", 2) == [0.0, 0.0]


# ---- results round trip and the token-loss score -------------------------------------------------------
def test_results_round_trip_and_token_loss(tmp_path, native_model, var_task):
    from tlens_icl import token_loss_score
    from tlens_icl.analyses.heads.ablation import HeadAblationResult
    from tlens_icl.analyses.heads.scores import HeadScoresResult
    from tlens_icl.results import tensors_equal

    hs = head_scores(native_model, n=4, length=8)
    assert tensors_equal(hs, HeadScoresResult.load(hs.save(tmp_path / "hs")))
    res = head_ablation(native_model, [var_task], {"FV": torch.rand(2, 4), "induction": hs}, ks=(0, 1), n_random=2,
                        n=4, n_shots=2, loss_data_kind="episodes", loss_n=4)
    back = HeadAblationResult.load(res.save(tmp_path / "ab"))
    assert tensors_equal(res, back) and back.to_dataframe().equals(res.to_dataframe())
    tl = token_loss_score(native_model, "episodes", tasks=[var_task], n=4, n_shots=3)
    assert tl.losses.shape == (4, 4) and tl.early == 0 and tl.late == 3
    assert math.isclose(tl.score(), float((tl.losses[:, 3] - tl.losses[:, 0]).mean()), rel_tol=1e-6)


def test_cli_heads_writes_figure_tables_and_report(tmp_path):
    from tlens_icl.cli.main import main

    out = tmp_path / "heads"
    rc = main(["heads", "uppercase", "bitwise_and", "--n", "4", "--n-mean", "4", "--n-corrupted", "3",
               "--shots", "3", "--ks", "0", "2", "0.1", "--seeds", "2", "--exclude", "0.05", "--loss-n", "4",
               "--overlap-ks", "1", "3", "--out", str(out)])
    assert rc == 0
    for f in ("ablation/ablation.png", "overlap/overlap.png", "head_scores/head_scores.png", "ablation.csv",
              "overlap.csv", "depth.csv", "top_induction.csv", "top_fv.csv", "report.md", "index.html"):
        assert (out / f).is_file(), f
    import pandas as pd

    df = pd.read_csv(out / "ablation.csv")
    assert sorted(set(df.k)) == [0, 2, 3] and set(df.method) == {"FV", "induction", "random"}
