"""Which heads drive in-context learning: induction heads and function-vector heads side by side.

``scores`` (induction / previous-token / duplicate-token scores), ``token_loss`` (Olsson's token-loss
ICL score), ``ablation`` (Yin & Steinhardt's ablation with exclusion), ``overlap`` (top-k overlap
against chance, depth) and ``dynamics`` (the same heads over the embedded model's training).
"""
