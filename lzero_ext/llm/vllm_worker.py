"""vLLM worker extension for in-place weight updates (loaded by vLLM by module path; imports nothing heavy)."""
from __future__ import annotations

import torch


class WeightUpdateExtension:
    """Mixed into vLLM's GPU worker through ``worker_extension_cls``; called with ``LLM.collective_rpc``."""

    def load_named_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Load (HF parameter name, tensor) pairs; vLLM's model maps HF names onto its fused layers."""
        self.model_runner.model.load_weights(weights=weights)
