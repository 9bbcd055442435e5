"""Targeted mutation testing of tlens_icl's core maths: plant one-line bugs, one at a time, and run the tests
that guard against them. A mutation is *caught* when those tests fail.

    python scripts/mutate.py                 # every mutation (~15 min on 2 cores)
    python scripts/mutate.py --only sign     # one kind: sign, position, axis, layer, bias, count, logits
    python scripts/mutate.py --list

Why not mutmut / cosmic-ray: they generate thousands of mutants of every operator and run the suite for each;
with model-building tests of tens of seconds on 2 CPU cores that is days. These mutations are the kinds an
audit planted (issue 10): a sign, a position (``[:, -1]`` instead of each row's query), an axis, a layer index,
a bias count, a resampling count. Each runs in a scratch copy of the package, never in the working tree. The
score goes to the README's development section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
P = "tests/test_properties.py::"
L = "tests/test_logit_rows.py::"


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    #: a second (old, new) edit in the same file, planted together with the first
    also: tuple[str, str] | None = None


MUTATIONS = [
    # ---- position: [:, -1] instead of each row's query position
    Mutation("logits read at -1", "position", "tlens_icl/engine/scoring.py",
             "return logits[torch.arange(logits.shape[0], device=logits.device), query_pos.to(logits.device)]",
             "return logits[:, -1]", (P + "test_logits_and_hook_z_are_read_at_each_rows_query_position[native]",)),
    Mutation("hook_z read at -1", "position", "tlens_icl/engine/query.py",
             "got[layer] = z[rows, q].detach().float().cpu()", "got[layer] = z[:, -1].detach().float().cpu()",
             (P + "test_logits_and_hook_z_are_read_at_each_rows_query_position[native]",)),
    Mutation("attention pattern read at -1", "position", "tlens_icl/analyses/representations/attention_ratio.py",
             "at_query = pattern[rows, :, query_pos.to(pattern.device), :]", "at_query = pattern[:, :, -1, :]",
             (P + "test_attention_pattern_is_read_at_each_rows_query_position",)),
    Mutation("vector added at -1", "position", "tlens_icl/analyses/vectors/common.py",
             "        return rows, query_pos.to(act.device)\n",
             "        return rows, torch.full((b,), act.shape[1] - 1, device=act.device)\n",
             (P + "test_vector_added_at_each_rows_query_position",)),
    Mutation("residual captured at -1", "position", "tlens_icl/analyses/vectors/common.py",
             "out[i].append(at_query(act, sub.query_pos).detach().float().cpu())",
             "out[i].append(act[:, -1].detach().float().cpu())",
             ("tests/test_vectors.py::test_task_vector_is_mean_query_residual",)),
    Mutation("activations collected at -1", "position", "tlens_icl/analyses/representations/activations.py",
             "w[torch.arange(len(batch)), batch.query_pos] = 1.0", "w[:, -1] = 1.0",
             ("tests/test_activations.py::test_collected_values_equal_run_with_cache[native]",)),
    # ---- logits cut to the rows read (tests/test_logit_rows.py)
    Mutation("cut keeps the wrong rows", "logits", "tlens_icl/engine/runs.py",
             "return act[ar, p][:, None] if p.dim() == 1 else act[ar[:, None], p]",
             "return act[ar.flip(0), p][:, None] if p.dim() == 1 else act[ar.flip(0)[:, None], p]",
             (L + "test_cut_logits_equal_the_full_forward_at_every_read_position[gpt2]",)),
    Mutation("cut one position early, unproven", "logits", "tlens_icl/engine/runs.py",
             "return act[ar, p][:, None] if p.dim() == 1 else act[ar[:, None], p]",
             "return act[ar, (p - 1).clamp(min=0)][:, None] if p.dim() == 1 else act[ar[:, None], p]",
             (L + "test_engine_reads_equal_the_full_forward[llama_lm_bias]",),
             ("    name = hooks.logits_input(model)\n    if name is not None:\n",
              "    name = hooks.logits_input(model)\n    if False:\n")),
    Mutation("clean run read before the query", "logits", "tlens_icl/engine/runs.py",
             "at = logit_rows(model, sub.query_pos, fwd)", "at = logit_rows(model, (sub.query_pos - 1).clamp(min=0), fwd)",
             (L + "test_engine_reads_equal_the_full_forward[gpt2]", L + "test_mediation_equals_the_full_logits_path[gpt2-fast]")),
    Mutation("answer scored one position late", "logits", "tlens_icl/engine/runs.py",
             "at = logit_rows(model, answer_positions(sub.query_pos, [len(a) + 1 for a in answers[sl]])[1], fwd)",
             "at = logit_rows(model, answer_positions(sub.query_pos + 1, [len(a) + 1 for a in answers[sl]])[1], fwd)",
             (L + "test_engine_reads_equal_the_full_forward[gemma2_softcap]",)),
    Mutation("ablation sweep reads before the query", "logits", "tlens_icl/engine/ablation.py",
             "at = logit_rows(model, reduce.query_pos[rows], fwd)",
             "at = logit_rows(model, (reduce.query_pos[rows] - 1).clamp(min=0), fwd)",
             (L + "test_ablation_sweep_at_the_query_equals_a_hooked_forward[llama_lm_bias]",)),
    Mutation("the proof runs the caller's hooks", "logits", "tlens_icl/engine/runs.py",
             "with torch.inference_mode(), hooks_set_aside(model):", "with torch.inference_mode():",
             (L + "test_the_proof_runs_no_hook_of_the_caller",)),
    Mutation("planner counts logits nowhere", "logits", "tlens_icl/engine/runs.py",
             "row = bytes_per_token(model, seq, logits=False) * seq + logit_bytes(model) * k",
             "row = bytes_per_token(model, seq, logits=False) * seq",
             (L + "test_row_planner_counts_logits_only_where_read[native]",)),
    # ---- sign
    Mutation("naive patch effect sign", "sign", "tlens_icl/engine/query.py",
             "effects[i, sl] = score(at_query(model(toks), q), sl) - baseline[sl]",
             "effects[i, sl] = baseline[sl] - score(at_query(model(toks), q), sl)",
             ("tests/test_patching.py::test_query_head_patching_equals_transformer_lens_by_pos[native]",)),
    Mutation("fast patch effect sign", "sign", "tlens_icl/engine/query.py",
             "score(copy_logits[:, j], sl) - ref)", "ref - score(copy_logits[:, j], sl))",
             ("tests/test_patching.py::test_query_head_patching_equals_transformer_lens_by_pos[native]",)),
    Mutation("vector subtracted", "sign", "tlens_icl/analyses/vectors/common.py",
             "out[rows, cols] = out[rows, cols] + coeff * v.to(", "out[rows, cols] = out[rows, cols] - coeff * v.to(",
             (P + "test_vector_at_layer_l_enters_the_residual_after_block_l[native]",)),
    Mutation("attribution difference sign", "sign", "tlens_icl/analyses/causal/attribution.py",
             "return ((vals[:, layer].to(z.device) - z[rows, q]) * grad[rows, q]).sum(-1)",
             "return ((z[rows, q] - vals[:, layer].to(z.device)) * grad[rows, q]).sum(-1)",
             ("tests/test_attribution.py::test_matches_hand_computed_gradient[native-query]",)),
    Mutation("ICV PC1 sign", "sign", "tlens_icl/analyses/vectors/icv.py",
             "diff.reshape(diff.shape[0], -1).mean(0)) < 0:", "diff.reshape(diff.shape[0], -1).mean(0)) > 0:",
             ("tests/test_vectors.py::test_icv_preserves_norms_and_is_pc1",)),
    Mutation("soft injection blend swapped", "sign", "tlens_icl/analyses/vectors/soft_injection.py",
             "out[rows, cols] = (1 - a) * z[rows, cols] + a * e", "out[rows, cols] = a * z[rows, cols] + (1 - a) * e",
             ("tests/test_vectors.py::test_soft_injection_weight_one_is_hard_replacement[native]",)),
    Mutation("rank counts ties against the answer", "sign", "tlens_icl/engine/scoring.py",
             "return (logits > target).sum(-1).float()", "return (logits >= target).sum(-1).float() - 1",
             (P + "test_rank_counts_only_strictly_better_tokens",)),
    # ---- axis
    Mutation("attention read along the key axis", "axis", "tlens_icl/analyses/representations/attention_ratio.py",
             "at_query = pattern[rows, :, query_pos.to(pattern.device), :]",
             "at_query = pattern[rows, :, :, query_pos.to(pattern.device)]",
             (P + "test_attention_pattern_is_read_at_each_rows_query_position",)),
    Mutation("softmax over the batch axis", "axis", "tlens_icl/engine/scoring.py",
             "return logits.float().softmax(-1).gather(", "return logits.float().softmax(0).gather(",
             ("tests/test_evaluate.py::test_accuracy_matches_hand_computation[native]",)),
    Mutation("shuffled control scored on true labels", "axis", "tlens_icl/analyses/representations/decodability.py",
             "(loo_knn_predict(x, p, k=k_used, metric=metric) == p).mean()",
             "(loo_knn_predict(x, p, k=k_used, metric=metric) == y).mean()",
             (P + "test_shuffled_label_control_is_the_knn_of_permuted_labels",)),
    Mutation("kNN tie to the lowest class", "axis", "tlens_icl/analyses/representations/decodability.py",
             "return neighbour_labels[rows, tied.argmax(1)]", "return votes.argmax(1)",
             (P + "test_knn_ties_go_to_the_nearest_tied_neighbour_and_k_used_is_recorded",)),
    Mutation("alternatives ignored", "axis", "tlens_icl/engine/scoring.py",
             "    for a in accepted:\n        a = tuple(a)",
             "    for a in accepted[:1]:\n        a = tuple(a)",
             (P + "test_alternatives_count_when_the_model_predicts_them",)),
    # ---- layer index
    Mutation("vector one layer too late", "layer", "tlens_icl/analyses/vectors/common.py",
             "name = resid_hook_name(site, check_layer(model, layer))\n    check_position(position)",
             "name = resid_hook_name(site, min(check_layer(model, layer) + 1, model.cfg.n_layers - 1))\n"
             "    check_position(position)",
             (P + "test_vector_at_layer_l_enters_the_residual_after_block_l[native]",)),
    Mutation("sweep reports the wrong layer", "layer", "tlens_icl/analyses/vectors/common.py",
             "L = layers[j]\n", "L = layers[j - 1]\n",
             (P + "test_layer_sweep_column_l_is_the_vector_at_layer_l",)),
    Mutation("task vector of the next layer", "layer", "tlens_icl/analyses/vectors/task_vectors.py",
             "v = tv.at(layer) if isinstance(tv, TaskVector) else tv",
             "v = tv.at(min(layer + 1, model.cfg.n_layers - 1)) if isinstance(tv, TaskVector) else tv",
             (P + "test_task_vector_replaces_the_residual_after_block_l",)),
    Mutation("FV of every task from task 0's means", "layer", "tlens_icl/analyses/vectors/function_vectors.py",
             "function_vector_from_heads(model, mediation.mean_z[t], heads,",
             "function_vector_from_heads(model, mediation.mean_z[0], heads,",
             (P + "test_function_vector_of_each_task_of_a_multi_task_mediation",)),
    Mutation("FV heads from the universal ranking", "layer", "tlens_icl/analyses/vectors/function_vectors.py",
             "heads = mediation.top_heads(k, task=task)", "heads = mediation.top_heads(k)",
             (P + "test_function_vector_of_each_task_of_a_multi_task_mediation",)),
    # ---- bias count
    Mutation("b_O once per head", "bias", "tlens_icl/analyses/vectors/function_vectors.py",
             "vec = vec + _bias_once(model, sorted({l for l, _ in hs}))", "vec = vec + _bias_once(model, [l for l, _ in hs])",
             (P + "test_function_vector_bias_once_per_layer_on_every_architecture[native]",)),
    Mutation("b_O dropped", "bias", "tlens_icl/analyses/vectors/function_vectors.py",
             "vec = vec + _bias_once(model, sorted({l for l, _ in hs}))", "vec = vec + 0 * _bias_once(model, [0])",
             (P + "test_function_vector_bias_once_per_layer_on_every_architecture[native]",)),
    # ---- resampling / averaging counts
    Mutation("bootstrap resamples one example", "count", "tlens_icl/results/heads.py",
             "idx = torch.randint(0, n, (n_resamples, n), generator=gen)",
             "idx = torch.randint(0, n, (n_resamples, max(1, n // 2)), generator=gen)",
             (P + "test_bootstrap_ci_width_matches_the_standard_error",)),
    Mutation("bootstrap keeps NaN padding", "count", "tlens_icl/results/heads.py",
             "per_task = per_task[..., ~per_task.reshape(-1, per_task.shape[-1]).isnan().all(0)]",
             "per_task = torch.nan_to_num(per_task)",
             (P + "test_bootstrap_ci_width_matches_the_standard_error",)),
    Mutation("task mean divided by examples", "count", "tlens_icl/results/heads.py",
             "draws /= values.shape[0]", "draws /= values.shape[0] + 1",
             (P + "test_bootstrap_ci_width_matches_the_standard_error",)),
]


def run(mutation: Mutation, copy: Path, env: dict[str, str]) -> tuple[bool, float]:
    target = copy / mutation.file
    original = target.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"mutation {mutation.name!r}: the original text occurs {original.count(mutation.old)} times "
                         f"in {mutation.file} (the code moved; update scripts/mutate.py)")
    mutated = original.replace(mutation.old, mutation.new)
    if mutation.also is not None:
        if mutated.count(mutation.also[0]) != 1:
            raise SystemExit(f"mutation {mutation.name!r}: its second edit does not occur once in {mutation.file}")
        mutated = mutated.replace(*mutation.also)
    target.write_text(mutated)
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0",
                               *mutation.tests], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    finally:
        target.write_text(original)
    return proc.returncode != 0, time.time() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="one kind: sign, position, axis, layer, bias, count, logits")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only in (None, m.kind)]
    if args.list:
        for m in chosen:
            print(f"{m.kind:9s} {m.name:42s} {m.file}")
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    caught = 0
    with tempfile.TemporaryDirectory(prefix="tlens_icl_mutate_") as tmp:
        copy = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for d in ("tlens_icl", "tests", "tasks"):
            shutil.copytree(ROOT / d, copy / d, ignore=ignore)
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        env["PYTHONPATH"] = str(copy)
        for m in chosen:
            hit, secs = run(m, copy, env)
            caught += hit
            print(f"{'caught  ' if hit else 'SURVIVED'} {m.kind:9s} {m.name:42s} ({secs:.0f} s)", flush=True)
    print(f"mutation score: {caught}/{len(chosen)} caught")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    raise SystemExit(main())
