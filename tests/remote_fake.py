"""A fake vLLM driver for a TransformerLens ``RemoteBridge``: TL's driver protocol and vLLM's limits, on CPU.

It declares exactly the hook points TransformerLens's vLLM overlay declares for the model's config
(``DecoderOnlyOverlay``: residual stream, attention and MLP outputs, embedding, final norm; per-head
outputs, patterns, q/k/v and block inputs non-fireable), validates intervention specs with TL's own
``validate_spec`` plus the gates ``VLLMDriver`` adds (hook membership; ``pos`` only with
``enable_position_interventions``; one prompt per call unless ``enable_batching``, which takes no ``pos``),
and applies them the way vLLM's capture hook does (``out = out * scale + bias`` on the selected rows,
captured *after* the edit). The forward itself runs a local TransformerBridge of the same weights, so
whatever tlens_icl assembles from the remote calls can be compared with the local model. Every call is
recorded (``calls``) so tests can check the specs that were sent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformer_lens.model_bridge.driver_protocol import ForwardResult, validate_driver
from transformer_lens.model_bridge.sources._driver_base import DriverBase
from transformer_lens.model_bridge.sources.vllm.intervention_specs import validate_spec
from transformer_lens.model_bridge.sources.vllm.overlays import DecoderOnlyOverlay


@dataclass
class Call:
    input_ids: torch.Tensor
    capture: tuple[str, ...]
    intervene: dict[str, dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeVLLMDriver(DriverBase):
    _supported_features = frozenset()

    def __init__(self, local: Any, *, enable_position_interventions: bool = True, enable_batching: bool = False):
        hf_config = local.original_model.config
        super().__init__(local.cfg, local.tokenizer, architecture=type(local.original_model).__name__)
        self._local = local
        self._enable_position_interventions = enable_position_interventions
        self._enable_batching = enable_batching
        overlay = DecoderOnlyOverlay()
        specs = overlay.capture_specs(hf_config)
        self._widths = {name: width for name, (_path, width) in specs.items()}
        self.supported_hook_points = frozenset(specs)
        n_layers = hf_config.num_hidden_layers
        self.non_fireable_hook_points = frozenset(
            t.replace("{i}", str(i)) for t in overlay.nonfiring_hooks() for i in (range(n_layers) if "{i}" in t else [0]))
        self.calls: list[Call] = []
        validate_driver(self)

    def forward(self, input_ids: Any = None, *, capture: tuple[str, ...] = (), intervene: Any = None,
                max_new_tokens: int = 1, return_logits: bool = True, **kwargs: Any) -> ForwardResult:
        if input_ids is None:
            raise ValueError("FakeVLLMDriver requires input_ids")
        if int(max_new_tokens) != 1:
            raise NotImplementedError("VLLMDriver supports max_new_tokens=1 only.")
        ids = torch.as_tensor(input_ids)
        ids = ids[None] if ids.dim() == 1 else ids
        if ids.shape[0] != 1 and not self._enable_batching:
            raise NotImplementedError("VLLMDriver supports batch_size=1 only.")
        specs = {}
        for name, spec in (intervene or {}).items():
            specs[name] = validate_spec(name, spec, width=self._widths.get(name))
            if name not in self.supported_hook_points:
                raise ValueError(f"Cannot intervene on {name!r}: not in supported_hook_points.")
            if specs[name].get("pos") is not None:
                if self._enable_batching or not self._enable_position_interventions:
                    raise NotImplementedError(f"Intervention {name!r}: per-position 'pos' requires "
                                              "boot_vllm(enable_position_interventions=True).")
                pos = specs[name]["pos"]
                if max([pos] if isinstance(pos, int) else pos) >= ids.shape[1]:
                    raise ValueError(f"Intervention {name!r}: 'pos' {pos} is beyond the prompt length {ids.shape[1]}.")
        self.calls.append(Call(ids.clone(), tuple(capture), specs, dict(kwargs)))
        got: dict[str, torch.Tensor] = {}
        hooks = [(name, self._hook(name, specs.get(name), name in capture, got))
                 for name in sorted(set(capture) | set(specs))]
        with torch.no_grad(), self._local.hooks(fwd_hooks=hooks):
            logits = self._local(ids)
        return ForwardResult(logits=logits.detach() if return_logits else None, captured=got)

    @staticmethod
    def _hook(name: str, spec: dict[str, Any] | None, keep: bool, got: dict[str, torch.Tensor]) -> Any:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = act
            if spec is not None:  # vLLM's affine: out * scale + bias on the selected positions
                pos = spec.get("pos")
                rows = slice(None) if pos is None else ([pos] if isinstance(pos, int) else list(pos))
                scale, bias = torch.ones_like(act), torch.zeros_like(act)
                op = spec["op"]
                value = torch.as_tensor(spec.get("value", 0.0), dtype=act.dtype)
                if op == "suppress":
                    scale[:, rows] = 0.0
                elif op == "scale":
                    scale[:, rows] = float(spec["factor"])
                else:
                    bias[:, rows] = value
                    if op == "set":
                        scale[:, rows] = 0.0
                out = act * scale + bias
            if keep:
                got[name] = out.detach().clone()
            return out

        return fn


def remote_bridge(local: Any, **driver_kwargs: Any) -> tuple[Any, FakeVLLMDriver]:
    """A ``RemoteBridge`` over :class:`FakeVLLMDriver` (built as ``RemoteBridge.boot_vllm`` builds its bridge)."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge import RemoteBridge
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf

    hf = local.original_model
    cfg = build_bridge_config_from_hf(hf.config, type(hf).__name__, "fake-vllm", torch.float32)
    adapter = ArchitectureAdapterFactory.select_architecture_adapter(cfg)
    driver = FakeVLLMDriver(local, **driver_kwargs)
    return RemoteBridge(adapter=adapter, tokenizer=local.tokenizer, driver=driver), driver
