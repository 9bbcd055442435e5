"""Targeted mutation testing of tlens_icl's core maths: plant one-line bugs, one at a time, and run the tests
that guard against them. A mutation is *caught* when those tests fail.

    python scripts/mutate.py                 # every mutation (~45 min on 2 loaded cores)
    python scripts/mutate.py --only sign     # one kind: sign, position, axis, layer, bias, count, ties, heads,
                                             #   resume, load, memory, arch, logits, forming
    python scripts/mutate.py --name pooled   # the mutations whose name contains a word
    python scripts/mutate.py --list

Why not mutmut / cosmic-ray: they generate thousands of mutants of every operator and run the suite for each;
with model-building tests of tens of seconds on 2 CPU cores that is days. These mutations are the kinds an
audit planted (issue 10): a sign, a position (``[:, -1]`` instead of each row's query), an axis, a layer index,
a bias count, a resampling count; and issue 21's: a decision from floats broken by float rounding, the heads
family's controls and means, a run's identity, a loaded file's consistency, the engine's out-of-memory
back-off; and issue 22's: the traits of the real models' architectures (a sliding window, q/k/v biases, no
BOS, an untied unembedding). Each runs in a scratch copy of the package, never in the working tree. The score goes to the
README's development section.
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
E = "tests/test_engine.py::"
L = "tests/test_logit_rows.py::"
S = "tests/test_steering.py::"


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
    Mutation("hook_z read at -1", "position", "tlens_icl/engine/capture.py",
             "return act[ar, self.pos[rows].to(act.device)]", "return act[:, -1]",
             (P + "test_logits_and_hook_z_are_read_at_each_rows_query_position[native]",
              "tests/test_vectors.py::test_task_vector_is_mean_query_residual")),
    Mutation("attention pattern read at -1", "position", "tlens_icl/analyses/representations/attention_ratio.py",
             "at_query = pattern[rows, :, query_pos.to(pattern.device), :]", "at_query = pattern[:, :, -1, :]",
             (P + "test_attention_pattern_is_read_at_each_rows_query_position",)),
    Mutation("vector added at -1", "position", "tlens_icl/analyses/vectors/steering.py",
             '        return "last" if query_pos is None else query_pos.long().cpu()\n',
             '        return "last"\n',
             (P + "test_vector_added_at_each_rows_query_position",)),
    Mutation("query copy of the last column", "position", "tlens_icl/engine/query.py",
             "ext = torch.cat([toks, toks[ar, qd][:, None].expand(b, n_copies)], 1)",
             "ext = torch.cat([toks, toks[:, -1][:, None].expand(b, n_copies)], 1)",
             ("tests/test_patching.py::test_query_head_patching_equals_transformer_lens_by_pos[native]",)),
    Mutation("activations collected at -1", "position", "tlens_icl/analyses/representations/activations.py",
             'reducer = AtPositions(batch.query_pos) if position == "query"',
             'reducer = AtPositions(torch.full_like(batch.query_pos, batch.tokens.shape[1] - 1)) if position == "query"',
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
             ("    name = logits_input(model)\n    if name is not None:\n",
              "    name = logits_input(model)\n    if False:\n")),
    Mutation("clean run read before the query", "logits", "tlens_icl/engine/runs.py",
             "logit_rows(model, sub.query_pos, fwd)", "logit_rows(model, (sub.query_pos - 1).clamp(min=0), fwd)",
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
             "row = _activation_bytes(model.cfg, elem, seq) * seq + _logit_bytes(model.cfg, elem) * k",
             "row = _activation_bytes(model.cfg, elem, seq) * seq",
             (L + "test_row_planner_counts_logits_only_where_read[native]",)),
    # ---- sign
    Mutation("patch effect sign", "sign", "tlens_icl/engine/query.py",
             "effects = run.values - run.baseline[None]", "effects = run.baseline[None] - run.values",
             ("tests/test_patching.py::test_query_head_patching_equals_transformer_lens_by_pos[native]",)),
    Mutation("copy logits of the wrong variant", "sign", "tlens_icl/engine/query.py",
             "out.put(group, rows[sub], _reduce_copies(reduce, logits[:, :-1], rows[sub]))",
             "out.put(group, rows[sub], _reduce_copies(reduce, logits[:, :-1].flip(1), rows[sub]))",
             ("tests/test_patching.py::test_query_head_patching_equals_transformer_lens_by_pos[native]",)),
    Mutation("vector subtracted", "sign", "tlens_icl/analyses/vectors/steering.py",
             'SpecHook("add", value=c * v.detach().float()', 'SpecHook("add", value=-c * v.detach().float()',
             (P + "test_vector_at_layer_l_enters_the_residual_after_block_l[native]",)),
    Mutation("attribution difference sign", "sign", "tlens_icl/analyses/causal/attribution.py",
             "return ((vals[:, layer].to(z.device) - z[rows, q]) * grad[rows, q]).sum(-1)",
             "return ((z[rows, q] - vals[:, layer].to(z.device)) * grad[rows, q]).sum(-1)",
             ("tests/test_attribution.py::test_matches_hand_computed_gradient[native-query]",)),
    Mutation("ICV PC1 sign", "sign", "tlens_icl/analyses/vectors/icv.py",
             "diff.reshape(diff.shape[0], -1).mean(0)) < 0:", "diff.reshape(diff.shape[0], -1).mean(0)) > 0:",
             ("tests/test_vectors.py::test_icv_preserves_norms_and_is_pc1",)),
    Mutation("soft injection blend swapped", "sign", "tlens_icl/analyses/vectors/steering.py",
             'return x + a * vec if mode == "add" else (1 - a) * x + a * vec',
             'return x + a * vec if mode == "add" else a * x + (1 - a) * vec',
             ("tests/test_vectors.py::test_soft_injection_weight_one_is_hard_replacement[native]",)),
    Mutation("soft injection trained with the blend swapped", "sign", "tlens_icl/analyses/vectors/soft_injection.py",
             "out[rows, cols] = (1 - a) * z[rows, cols] + a * e", "out[rows, cols] = a * z[rows, cols] + (1 - a) * e",
             ("tests/test_vectors.py::test_soft_injection_trains_the_blend_it_applies",)),
    Mutation("rank counts ties against the answer", "sign", "tlens_icl/engine/scoring.py",
             "return (logits.float() > target + _row_tolerance(logits)).sum(-1).float()",
             "return (logits.float() >= target).sum(-1).float() - 1",
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
             "[(knn_vote(near, p) == p).mean() for p in perms]",
             "[(knn_vote(near, p) == y).mean() for p in perms]",
             (P + "test_shuffled_label_control_is_the_knn_of_permuted_labels",)),
    Mutation("kNN tie to the lowest class", "axis", "tlens_icl/analyses/representations/decodability.py",
             "return neighbour_labels[rows, tied.argmax(1)]", "return votes.argmax(1)",
             (P + "test_knn_ties_go_to_the_nearest_tied_neighbour_and_k_used_is_recorded",)),
    Mutation("alternatives ignored", "axis", "tlens_icl/engine/scoring.py",
             "    for a in accepted:\n        a = tuple(a)",
             "    for a in accepted[:1]:\n        a = tuple(a)",
             (P + "test_alternatives_count_when_the_model_predicts_them",)),
    # ---- layer index
    Mutation("vector one layer too late", "layer", "tlens_icl/analyses/vectors/steering.py",
             "return [hooks.site_name(self.site, layer) for layer in self.layers]",
             "return [hooks.site_name(self.site, layer + 1) for layer in self.layers]",
             (P + "test_vector_at_layer_l_enters_the_residual_after_block_l[native]",)),
    Mutation("sweep reports the wrong layer", "layer", "tlens_icl/analyses/vectors/common.py",
             "batch_size=batch_size)\n        return LayerSweepResult(correct, p, base_c, base_p, settings, tuple(int(x) for x in layers)",
             "batch_size=batch_size)\n        return LayerSweepResult(correct, p, base_c, base_p, settings, tuple(int(x) + 1 for x in layers)",
             (P + "test_layer_sweep_column_l_is_the_vector_at_layer_l",)),
    Mutation("task vector of the next layer", "layer", "tlens_icl/analyses/vectors/steering.py",
             "            vec = vec[layer]\n", "            vec = vec[min(layer + 1, vec.shape[0] - 1)]\n",
             (P + "test_task_vector_replaces_the_residual_after_block_l",)),
    Mutation("FV of every task from task 0's means", "layer", "tlens_icl/analyses/vectors/function_vectors.py",
             "function_vector_from_heads(model, mediation.mean_z[t], heads,",
             "function_vector_from_heads(model, mediation.mean_z[0], heads,",
             (P + "test_function_vector_of_each_task_of_a_multi_task_mediation",)),
    Mutation("FV heads from the universal ranking", "layer", "tlens_icl/analyses/vectors/function_vectors.py",
             'heads = mediation.top_heads(k, task=task if heads_by == "task" else None)', "heads = mediation.top_heads(k)",
             (P + "test_function_vector_of_each_task_of_a_multi_task_mediation",)),
    # ---- bias count
    Mutation("b_O once per head", "bias", "tlens_icl/analyses/vectors/function_vectors.py",
             "                mine = mine + bias\n", "                mine = mine + bias * len(ours)\n",
             (P + "test_function_vector_bias_once_per_layer_on_every_architecture[native]",)),
    Mutation("b_O dropped", "bias", "tlens_icl/analyses/vectors/function_vectors.py",
             "                mine = mine + bias\n", "                mine = mine + 0.0 * bias\n",
             (P + "test_function_vector_bias_once_per_layer_on_every_architecture[native]",)),
    # ---- architecture: the real models' traits (tiny Gemma 3 and Qwen2 of tests/conftest.py)
    Mutation("FV: Gemma's post-attention norm skipped", "arch", "tlens_icl/analyses/vectors/function_vectors.py",
             "norm = attn_post_norm(model, at)", "norm = None",
             ("tests/test_architectures.py::test_function_vector_is_what_its_heads_write_to_the_residual_stream",)),
    Mutation("sliding window dropped from the recorded masks", "arch", "tlens_icl/models/kv.py",
             "seen[id(m)] = may_attend(m, hs.shape[1], hs.shape[1])", "seen[id(m)] = may_attend(None, hs.shape[1], hs.shape[1])",
             (E + "test_every_route_equals_the_plain_loop[gemma3]",)),
    Mutation("suffix replay: a global layer's mask everywhere", "arch", "tlens_icl/engine/positions.py",
             "    for block, mk in prefix.masks.items():\n        if id(mk) not in memo:",
             "    for block, mk in {b: prefix.masks[1] for b in prefix.masks}.items():\n        if id(mk) not in memo:",
             (E + "test_suffix_replay_equals_transformer_lens_patching[resid_pre-gemma3]",)),
    Mutation("q/k/v biases dropped in replayed copies", "arch", "tlens_icl/models/kv.py",
             "    with skipping(model, skip, tuple_blocks), _inject(model, cache, masks=masks):\n        yield\n",
             "    lins = [getattr(b.attn.original_component, n) for b in model.blocks for n in ('q_proj', 'k_proj', 'v_proj')]\n"
             "    saved = [(lin.bias, lin.bias.detach().clone()) for lin in lins if lin.bias is not None]\n"
             "    for bias, _ in saved:\n        bias.data.zero_()\n"
             "    try:\n        with skipping(model, skip, tuple_blocks), _inject(model, cache, masks=masks):\n            yield\n"
             "    finally:\n        for bias, value in saved:\n            bias.data.copy_(value)\n",
             (E + "test_every_route_equals_the_plain_loop[qwen2]",)),
    Mutation("position 0 taken for a BOS (Qwen2 has none)", "arch", "tlens_icl/engine/ablation.py",
             'return (batch.attention_mask == 1) & (batch.roles != ROLE_ID["bos"])',
             'return (batch.attention_mask == 1) & (batch.roles != ROLE_ID["bos"]) & (torch.arange(batch.tokens.shape[1]) > 0)',
             ("tests/test_heads.py::test_sweep_starts_each_set_at_its_first_layer_exactly[qwen2]",)),
    Mutation("unembedding read as the tied embedding", "arch", "tlens_icl/analyses/vectors/common.py",
             "logits = model.ln_final(v[None, None, :])[0, 0] @ model.W_U + model.b_U",
             "logits = model.ln_final(v[None, None, :])[0, 0] @ model.W_E.T + model.b_U",
             ("tests/test_vectors.py::test_decode_matches_the_models_unembedding[qwen2]",)),
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
    # ---- issue 21: discrete decisions from floats decided by float rounding
    Mutation("kNN neighbours tied by rounding", "ties", "tlens_icl/_ties.py",
             "    groups = tie_groups(srt, tol)\n", "    groups = tie_groups(srt, 0.0)\n",
             (P + "test_knn_neighbours_do_not_depend_on_float_rounding",)),
    Mutation("top heads tied by rounding", "ties", "tlens_icl/_ties.py",
             "t = tolerance(v, rtol) if tol is None else tol", "t = 0.0",
             (P + "test_top_heads_best_layer_and_top1_do_not_depend_on_float_rounding",)),
    Mutation("argmax tied by rounding", "ties", "tlens_icl/_ties.py",
             "near = filled >= best - rtol * scale", "near = filled >= best",
             (P + "test_top_heads_best_layer_and_top1_do_not_depend_on_float_rounding",)),
    # ---- issue 21: the heads family
    Mutation("random control: one set for every seed", "heads", "tlens_icl/analyses/heads/ablation.py",
             "random_heads(*shape, c, seed * 1000 + s)", "random_heads(*shape, c, seed * 1000)",
             (P + "test_random_head_control_seeds_draw_different_head_sets",)),
    Mutation("loss ablated with the prompts' means", "heads", "tlens_icl/analyses/heads/ablation.py",
             "loss_scores = ldata.ablation_scores(model, head_lists, batch_size=batch_size, method=method)",
             "loss_scores = ldata.ablation_scores(model, head_lists, means, batch_size=batch_size, method=method)",
             (P + "test_token_loss_ablation_uses_the_means_of_its_own_sequences",)),
    Mutation("pooled means: mean of task means", "heads", "tlens_icl/analyses/heads/ablation.py",
             "total, count = (part if total is None else total + part), count + n",
             "total, count = (part / n if total is None else total + part / n), count + 1",
             (P + "test_pooled_means_weight_every_position_of_tasks_of_different_sizes",)),
    Mutation("token loss read at the output token", "heads", "tlens_icl/analyses/heads/token_loss.py",
             "reads.append([p - 1 for p in first] + [q])", "reads.append([p for p in first] + [q])",
             (P + "test_token_loss_is_read_where_each_slot_predicts_its_token",)),
    Mutation("token loss of the current token", "heads", "tlens_icl/engine/ablation.py",
             ".log_softmax(-1).gather(-1, toks[:, 1:, None])", ".log_softmax(-1).gather(-1, toks[:, :-1, None])",
             (P + "test_token_loss_is_read_where_each_slot_predicts_its_token",)),
    # ---- issue 21: what identifies a resumable run and its units
    Mutation("prompt digest of shapes only", "resume", "tlens_icl/results/checkpoint.py",
             '        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")\n', "",
             (P + "test_the_prompt_digest_changes_with_the_contents_at_equal_shape",)),
    Mutation("a unit of another run reused", "resume", "tlens_icl/results/checkpoint.py",
             "if stamp == self.run_id or (stamp is None and self.legacy):", "if True:",
             (P + "test_a_unit_of_another_run_is_never_reused",)),
    # ---- issue 21: loaded results and results of another model
    Mutation("recorded head count not checked", "load", "tlens_icl/results/base.py",
             '"head": info.get("n_heads"), ', "",
             (P + "test_loading_checks_the_recorded_model_against_the_tensors",)),
    Mutation("edited file accepted", "load", "tlens_icl/results/base.py",
             'if stamped and doc["digest"] != content_digest(tensors, doc["fields"]):', "if False:",
             ("tests/test_validation.py::test_a_saved_result_is_validated_against_itself",)),
    Mutation("all-NaN effects accepted", "load", "tlens_icl/results/base.py",
             "and t.numel() and bool(t.isnan().all()):", "and False:",
             ("tests/test_validation.py::test_a_saved_result_is_validated_against_itself",)),
    Mutation("another model's vector accepted", "load", "tlens_icl/results/base.py",
             "if now is not None and now != recorded:", "if False:",
             ("tests/test_validation.py::test_results_of_another_model_are_refused",)),
    # ---- issue 21 (from issue 19): the query engine's own loop backs off on out-of-memory
    Mutation("copies route without back-off", "memory", "tlens_icl/engine/query.py",
             '        in_plan(plan, work, model=model, what="query_interventions")\n    bar.close()\n'
             '    _fill_unedited(out, iv, n_layers)\n    return out.done("copies")',
             '        for rows, width in plan:\n            work(rows, width)\n    bar.close()\n'
             '    _fill_unedited(out, iv, n_layers)\n    return out.done("copies")',
             ("tests/test_memory.py::test_query_engine_backs_off_mid_run_on_every_route[native-fast-copies]",)),
    Mutation("kv route without back-off", "memory", "tlens_icl/engine/query.py",
             '        in_plan(plan, work, model=model, what="query_interventions")\n    bar.close()\n'
             '    _fill_unedited(out, iv, n_layers)\n    return out.done("kv")\n\n\ndef _query_rows',
             '        for rows, width in plan:\n            work(rows, width)\n    bar.close()\n'
             '    _fill_unedited(out, iv, n_layers)\n    return out.done("kv")\n\n\ndef _query_rows',
             ("tests/test_memory.py::test_query_engine_backs_off_mid_run_on_every_route[llama-fast-kv]",)),
    Mutation("ablation sweep without back-off", "memory", "tlens_icl/engine/ablation.py",
             'in_plan(plan, work, model=model, what="ablation_sweep")',
             "[work(rows, width) for rows, width in plan]",
             ("tests/test_memory.py::test_head_ablation_sweep_backs_off_mid_run",)),
    # ---- one way to apply a vector (API 0.3): SteeringVector, steer, evaluate_steering, generate
    Mutation("generation reads every row at the last column", "steer", "tlens_icl/analyses/vectors/steering.py",
             "at = logit_rows(model, cur[act] - 1, fwd)", "at = logit_rows(model, torch.full_like(cur[act], width - 1), fwd)",
             (S + "test_generate_on_a_padded_batch_equals_each_row_alone[native]",)),
    Mutation("generation writes each new token at the widest row's end", "steer",
             "tlens_icl/analyses/vectors/steering.py", "buf[act, cur[act]] = nxt", "buf[act, cur[act].max()] = nxt",
             (S + "test_generate_on_a_padded_batch_equals_each_row_alone[native]",)),
    Mutation("generation steers the query only, not the tokens after it", "steer",
             "tlens_icl/analyses/vectors/steering.py", "mask = cols >= start.to(act.device)[:, None]",
             "mask = cols == start.to(act.device)[:, None]",
             (S + "test_generate_equals_a_hand_written_loop_for_every_kind",)),
    Mutation("replace adds instead", "steer", "tlens_icl/analyses/vectors/steering.py",
             'return SpecHook("set", value=v.detach(), pos=_spec_position(pos, query_pos))',
             'return SpecHook("add", value=v.detach(), pos=_spec_position(pos, query_pos))',
             (S + "test_each_method_writes_its_papers_formula_bit_for_bit[native]",)),
    Mutation("in-context vector at the query only", "steer", "tlens_icl/analyses/vectors/steering.py",
             'def from_in_context_vector(cls, icv: Any, *, coeff: float = 0.1, position: Position = "all",',
             'def from_in_context_vector(cls, icv: Any, *, coeff: float = 0.1, position: Position = "query",',
             (S + "test_each_method_writes_its_papers_formula_bit_for_bit[native]",)),
    Mutation("evaluation steers the last position of padded rows", "steer", "tlens_icl/analyses/vectors/steering.py",
             "return [h for sv in items for h in sv.as_hooks(query_pos=sub.query_pos)]",
             "return [h for sv in items for h in sv.as_hooks()]",
             (S + "test_evaluate_steering_scores_as_the_hooks_and_the_query_route_do",)),
    Mutation("query route drops the coefficient", "steer", "tlens_icl/analyses/vectors/steering.py",
             'return resid_edits(self.layers, vecs, site=self.site, mode="add", coeff=self.coeff)',
             'return resid_edits(self.layers, vecs, site=self.site, mode="add")',
             (S + "test_evaluate_steering_scores_as_the_hooks_and_the_query_route_do",)),
    Mutation("several vectors: only the first applied", "steer", "tlens_icl/analyses/vectors/steering.py",
             "    items = _as_list(list(steering))\n", "    items = _as_list(list(steering))[:1]\n",
             (S + "test_several_vectors_at_once_equal_nested_blocks",)),
    Mutation("a saved vector loads without its head weights", "steer", "tlens_icl/analyses/vectors/steering.py",
             "                     tensors.get(\"head_weights\"), doc.get(\"metadata\") or {})",
             "                     None, doc.get(\"metadata\") or {})",
             (S + "test_every_kind_round_trips_through_a_file_and_applies_the_same",)),
    # ---- forming (issue 23): a training checkpoint is what its step says, and is measured as itself
    Mutation("checkpoint step loads the final weights", "forming", "tlens_icl/models/embedded/__init__.py",
             "return path / entries[int(step)]", 'return path / "model.safetensors"',
             ("tests/test_forming.py::test_checkpoints_reproduce_their_logged_metrics",)),
    Mutation("checkpoint index out of step order", "forming", "tlens_icl/models/embedded/forming.py",
             'index = {"steps": [r["step"] for r in records], "checkpoints": records,',
             'index = {"steps": [r["step"] for r in records[::-1]], "checkpoints": records[::-1],',
             ("tests/test_forming.py::test_checkpoints_reproduce_their_logged_metrics",)),
    Mutation("checkpoint metrics on the previous weights", "forming", "tlens_icl/models/embedded/forming.py",
             "        bridge.load_state_dict({k: v.float() for k, v in half.items()}, strict=True)\n", "",
             ("tests/test_forming.py::test_checkpoints_reproduce_their_logged_metrics",)),
    Mutation("lag targets always at lag 1", "forming", "tlens_icl/analyses/heads/scores.py",
             "t[:, :, lag:] = dup[:, :, :-lag]", "t[:, :, 1:] = dup[:, :, :-1]",
             ("tests/test_forming.py::test_lag_targets_hand_computed",)),
    Mutation("phase change measured from zero, not from the first value", "forming",
             "tlens_icl/workflows/dynamics.py", "level = v[0] + frac * rise", "level = frac * max(v)",
             ("tests/test_forming.py::test_phase_change_hand_computed",)),
    Mutation("lookup loss on keys not seen before", "forming", "tlens_icl/models/embedded/forming.py",
             "tgt += [value[k] if k in seen else IGNORE, IGNORE]", "tgt += [value[k], IGNORE]",
             ("tests/test_forming.py::test_lookup_targets_are_values_of_keys_seen_before",)),
    Mutation("repeat span of one fixed length", "forming", "tlens_icl/models/embedded/forming.py",
             "t = r.randint(*REPEAT_SPAN)", "t = REPEAT_SPAN[1]",
             ("tests/test_forming.py::test_repeat_rows_repeat_a_span_of_varying_length_to_the_end",)),
    Mutation("dynamics measured on the final model", "forming", "tlens_icl/workflows/dynamics.py",
             "rows.append(measure(load_model(model, step=step), tracked, rank))",
             "rows.append(measure(final, tracked, rank))",
             ("tests/test_forming.py::test_head_dynamics_measures_each_checkpoint_not_the_final_model",)),
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
    p.add_argument("--only", default=None, help="one kind: " + ", ".join(dict.fromkeys(m.kind for m in MUTATIONS)))
    p.add_argument("--name", default=None, help="only the mutations whose name contains this text")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only in (None, m.kind) and (args.name is None or args.name in m.name)]
    if not chosen:
        raise SystemExit("no mutation matches --only/--name (see --list)")
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
