"""The embedded model under TransformerLens 3 (bridge and HookedTransformer), and the same indirect effects as 4.x."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tlens_icl as ti
from tlens_icl.analyses.causal.mediation import IndirectEffectResult
from tlens_icl.errors import ModelStateError
from tlens_icl.models import adapter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from _reference import SETUP, compute  # noqa: E402


def tl4_python() -> str:
    """The TransformerLens 4 interpreter: $TLENS_ICL_TL4_PYTHON, else the main venv of this checkout."""
    py = os.environ.get("TLENS_ICL_TL4_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
    if not Path(py).exists():
        pytest.fail(f"No TransformerLens 4 interpreter at {py}: run the README's test command (it builds .venv "
                    "first) or set TLENS_ICL_TL4_PYTHON.")
    return py


@pytest.fixture(scope="module")
def tl4_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("tl4_reference")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([tl4_python(), str(HERE / "_reference.py"), str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from tlens_icl.analyses.representations.activations import ActivationSet

    return IndirectEffectResult.load(out / "ie"), ActivationSet.load(out / "acts")


def test_icl_tiny_loads_as_bridge_and_hooked_transformer_with_the_same_function(embedded_model, icl_tiny_hooked):
    assert adapter.family(embedded_model) == "tl3_bridge" and adapter.family(icl_tiny_hooked) == "tl3_hooked"
    batch = ti.make_prompts(embedded_model, "bitwise_xor", n=6, n_shots=3, seed=0)
    assert torch.equal(batch.tokens, ti.make_prompts(icl_tiny_hooked, "bitwise_xor", n=6, n_shots=3, seed=0).tokens)
    with torch.no_grad():
        a, b = embedded_model(batch.tokens), icl_tiny_hooked(batch.tokens)
    assert float((a - b).abs().max()) < 1e-4 * float(a.abs().max())
    rows = torch.arange(6)
    assert torch.equal(a[rows, batch.query_pos].argmax(-1), b[rows, batch.query_pos].argmax(-1))


def test_fast_path_on_a_tl3_native_bridge_uses_the_mask_and_equals_the_loop(embedded_model):
    kw = dict(n_mean=4, n=4, n_shots=3, heads=[(0, 1), (2, 3), (3, 0), (3, 5)])
    fast = ti.indirect_effect(embedded_model, "bitwise_xor", method="fast", **kw)
    naive = ti.indirect_effect(embedded_model, "bitwise_xor", method="naive", **kw)
    assert fast.method == "fast"
    torch.testing.assert_close(fast.effects, naive.effects, atol=1e-5, rtol=0, equal_nan=True)
    assert float(naive.effects.nan_to_num().abs().max()) > 1e-3  # the heads do something here


def test_a_pattern_edit_on_a_tl3_native_bridge_raises_instead_of_doing_nothing(embedded_model):
    from tlens_icl.engine import hooks

    batch = ti.make_prompts(embedded_model, "bitwise_xor", n=2, n_shots=2, seed=0)
    zero = [(hooks.pattern(layer), lambda p, hook: torch.zeros_like(p)) for layer in range(4)]
    with torch.no_grad():
        plain = embedded_model(batch.tokens)
        with embedded_model.hooks(fwd_hooks=zero):  # the trap, unguarded: the edit does nothing
            assert torch.equal(embedded_model(batch.tokens), plain)
        with pytest.raises(ModelStateError, match="ignores hook_pattern edits"), hooks.checked_hooks(embedded_model, zero):
            embedded_model(batch.tokens)
        seen = []
        with hooks.checked_hooks(embedded_model, [(hooks.pattern(0), lambda p, hook: seen.append(p.shape))]):
            embedded_model(batch.tokens)  # reading the pattern is fine
    assert seen


def test_indirect_effects_equal_across_transformer_lens_majors(tl4_reference, embedded_model, icl_tiny_hooked):
    ref_ie, ref_acts = tl4_reference
    assert ref_ie.info["transformer_lens"].startswith("4.")
    for model, tol in ((embedded_model, 1e-5), (icl_tiny_hooked, 1e-4)):
        ie, acts = compute(model)
        assert ie.info["transformer_lens"].startswith("3.") and ie.tasks == ref_ie.tasks
        torch.testing.assert_close(ie.mean_z, ref_ie.mean_z, atol=tol, rtol=0)
        torch.testing.assert_close(ie.corrupted_metric, ref_ie.corrupted_metric, atol=tol, rtol=0)
        torch.testing.assert_close(ie.effects, ref_ie.effects, atol=tol, rtol=0)
        assert ie.top_heads(5) == ref_ie.top_heads(5)
        torch.testing.assert_close(acts.resid_post, ref_acts.resid_post, atol=10 * tol, rtol=0)
        torch.testing.assert_close(acts.z, ref_acts.z, atol=tol, rtol=0)
    assert float(ref_ie.effects.abs().max()) > 1e-2, SETUP


def test_readme_quick_start_runs_unchanged_on_a_hooked_transformer(icl_tiny_hooked, tmp_path, monkeypatch, capsys):
    """The README's Python quick start, verbatim, with load_model handing back the HookedTransformer."""
    from test_interop import readme_section_code

    block = readme_section_code("Quick start (Python)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ti, "load_model", lambda *a, **k: icl_tiny_hooked)
    namespace: dict = {}
    exec(compile(block, "README quick start", "exec"), namespace)
    assert namespace["model"] is icl_tiny_hooked
    out = capsys.readouterr().out
    assert "bitwise_xor" in out and "->" in out


def test_readme_cache_and_steering_blocks_run_on_a_hooked_transformer(icl_tiny_hooked, tmp_path, monkeypatch):
    from test_interop import readme_section_code

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ti, "load_model", lambda *a, **k: icl_tiny_hooked)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning: the kv route serves a HookedTransformer
        exec(compile(readme_section_code("TransformerLens 3 and SAELens"), "README TL3 section", "exec"), namespace)
    assert namespace["model"] is icl_tiny_hooked and namespace["aie"].method == "fast"
    assert namespace["hook_name"] == "blocks.1.hook_resid_post" and (tmp_path / "fv_xor.safetensors").exists()
