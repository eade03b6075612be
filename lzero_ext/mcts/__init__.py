"""PriorZero's batched MCTS: our own numpy PUCT search, root-prior mixing, and world-model adapters.

Nothing imported here touches ``lzero.mcts`` or ``lzero.policy`` (they need LightZero's compiled tree, CPython
3.11 only). The UniZero adapter (``lzero_ext.mcts.unizero_adapter``, imports ``lzero.model``) and the optional C++
backend (``lzero_ext.mcts.ctree_backend``) are imported explicitly by whoever needs them.
"""
from lzero_ext.mcts.root_prior import MIX_MODES, MixedRootPrior, RootPriorMixer, mix_root_logits
from lzero_ext.mcts.search import (
    BatchedMCTS,
    RecurrentOutput,
    RootInput,
    SearchConfig,
    SearchModel,
    SearchOutput,
    select_action,
)

__all__ = [
    "BatchedMCTS",
    "MIX_MODES",
    "MixedRootPrior",
    "RecurrentOutput",
    "RootInput",
    "RootPriorMixer",
    "SearchConfig",
    "SearchModel",
    "SearchOutput",
    "mix_root_logits",
    "select_action",
]
