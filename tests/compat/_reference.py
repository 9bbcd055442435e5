"""Indirect effects and query residuals of icl-tiny, saved for the cross-major comparison.

Run by tests/compat/test_icl_tiny.py with the TransformerLens 4 interpreter: ``python _reference.py OUT``.
Imports the tlens_icl next to this file (the same checkout as the TL3 tier).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

torch.set_num_threads(1)
SETUP = dict(task="bitwise_xor", n_mean=8, n=6, n_shots=4, seed=0)


def compute(model):
    import tlens_icl as ti

    kw = {k: v for k, v in SETUP.items() if k != "task"}
    ie = ti.indirect_effect(model, SETUP["task"], **kw)
    batch = ti.make_prompts(model, SETUP["task"], n=8, n_shots=4, seed=3)
    acts = ti.collect_activations(model, batch, sites=["resid_post", "z"])
    return ie, acts


if __name__ == "__main__":
    import tlens_icl as ti
    from tlens_icl.models.adapter import tl_major

    assert tl_major() >= 4, "the reference must come from TransformerLens 4"
    out = Path(sys.argv[1])
    ie, acts = compute(ti.load_model("icl-tiny"))
    ie.save(out / "ie")
    acts.save(out / "acts")
    print("reference written", out, ie.method)
