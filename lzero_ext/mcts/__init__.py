"""PriorZero's batched MCTS: our own numpy PUCT search, root-prior mixing, and world-model adapters.

Nothing imported here touches ``lzero.mcts`` or ``lzero.policy`` (they need LightZero's compiled tree, CPython
3.11 only). The UniZero adapter (``lzero_ext.mcts.unizero_adapter``, imports ``lzero.model``) is imported explicitly
by whoever needs it. LightZero's C++ tree behind our search signature and the toy models, used only by the parity
tests and benchmarks, live in ``bench/`` (``ctree_backend.py``, ``toy_models.py``).
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
