"""Mix the world model's root policy with the LLM's action log-probs into the root prior logits of the search.

Modes (``mode``):

* ``'wm'``: the world model's logits alone (plain UniZero).
* ``'llm'``: the LLM's log-probs alone, divided by ``llm_temperature``.
* ``'fixed'``: a **probability-space** mixture ``p = (1 - w) * p_wm + w * p_llm`` with ``w = llm_weight``, where
  both distributions are softmaxes over the legal actions. Chosen over a log-linear (product-of-experts) mix because
  the PUCT prior must keep exploration mass: a mixture can never drive a legal action's prior below
  ``(1 - w) * p_wm(a)``, so one overconfident expert (an untrained LLM, or a LLM that gives a candidate ~0
  probability) cannot veto an action the other likes, whereas ``p_wm^(1-w) * p_llm^w`` would. It is also what the
  upstream PriorZero prototype does.
* ``'adaptive'``: the same mixture with a per-root weight driven by the world model's confidence,
  ``c = 1 - H(p_wm) / log(n_legal)`` (1 = one-hot, 0 = uniform; ``c = 1`` when only one action is legal) and
  ``w = w_max - (w_max - w_min) * c``. An untrained world model (uniform policy) defers to the LLM with ``w_max``;
  a confident one keeps ``1 - w_min`` of the mass. (The upstream prototype's formula moves the weight the other way,
  giving the LLM *more* weight when the world model is confident; we follow the issue's intent instead.)

The output is ``log p`` on legal actions and ``-inf`` on illegal ones (``-inf`` also on a legal action whose
probability is exactly zero, which only ``'llm'`` mode can produce); the search re-softmaxes it over legal actions.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from easydict import EasyDict

from lzero_ext.utils.config import merge_strict

logger = logging.getLogger(__name__)

MIX_MODES = ("wm", "llm", "fixed", "adaptive")


def _legal_softmax(logits: np.ndarray, legal_mask: np.ndarray, what: str) -> np.ndarray:
    masked = np.where(legal_mask, logits, -np.inf)
    row_max = masked.max(axis=1, keepdims=True)
    bad = ~np.isfinite(row_max[:, 0])
    if bad.any():
        raise ValueError(f"{what}: rows {np.flatnonzero(bad).tolist()} have no finite value on a legal action")
    exp = np.exp(masked - row_max)
    return exp / exp.sum(axis=1, keepdims=True)


def _log(probs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(probs)


def world_model_confidence(wm_logits: np.ndarray, legal_mask: np.ndarray) -> np.ndarray:
    """``1 - H(p_wm) / log(n_legal)`` per root, in [0, 1]; 1 where a single action is legal."""
    probs = _legal_softmax(np.asarray(wm_logits, dtype=np.float64), legal_mask, "wm_logits")
    entropy = -(probs * _log(np.where(probs > 0, probs, 1.0))).sum(axis=1)
    n_legal = legal_mask.sum(axis=1)
    max_entropy = np.log(np.maximum(n_legal, 2))
    return np.where(n_legal > 1, np.clip(1.0 - entropy / max_entropy, 0.0, 1.0), 1.0)


def adaptive_llm_weight(
    wm_logits: np.ndarray, legal_mask: np.ndarray, min_llm_weight: float, max_llm_weight: float
) -> np.ndarray:
    """Per-root LLM weight ``w_max - (w_max - w_min) * confidence``; see the module docstring."""
    confidence = world_model_confidence(wm_logits, legal_mask)
    return max_llm_weight - (max_llm_weight - min_llm_weight) * confidence


def _check_inputs(wm_logits: np.ndarray, llm_logprobs: np.ndarray | None, legal_mask: np.ndarray, mode: str) -> None:
    if mode not in MIX_MODES:
        raise ValueError(f"Unknown root-prior mode {mode!r}; expected one of {MIX_MODES}")
    if legal_mask.dtype != np.bool_ or legal_mask.shape != wm_logits.shape:
        raise ValueError(f"legal_mask must be bool with wm_logits' shape {wm_logits.shape}, got {legal_mask.dtype} {legal_mask.shape}")
    if not legal_mask.any(axis=1).all():
        raise ValueError(f"Roots {np.flatnonzero(~legal_mask.any(axis=1)).tolist()} have no legal action")
    if mode != "wm":
        if llm_logprobs is None:
            raise ValueError(f"mode {mode!r} needs llm_logprobs")
        if llm_logprobs.shape != wm_logits.shape:
            raise ValueError(f"llm_logprobs shape {llm_logprobs.shape} differs from wm_logits shape {wm_logits.shape}")
        if np.isnan(llm_logprobs[legal_mask]).any():
            raise ValueError("llm_logprobs contain NaN on legal actions")


def mix_root_logits(
    wm_logits: np.ndarray,
    llm_logprobs: np.ndarray | None,
    legal_mask: np.ndarray,
    mode: str,
    llm_weight: float | np.ndarray = 0.5,
    llm_temperature: float = 1.0,
    min_llm_weight: float = 0.3,
    max_llm_weight: float = 0.7,
) -> np.ndarray:
    """Root prior logits ``[B, A]`` (``-inf`` on illegal actions); see the module docstring for each mode.

    Args:
        wm_logits: ``[B, A]`` world-model policy logits at the roots.
        llm_logprobs: ``[B, A]`` LLM log-probs of each candidate action (``-inf``/anything outside candidates is
            ignored where ``legal_mask`` is False); unused in ``'wm'`` mode.
        legal_mask: ``[B, A]`` bool.
        mode: ``'wm'``, ``'llm'``, ``'fixed'`` or ``'adaptive'``.
        llm_weight: LLM weight in ``'fixed'`` mode, a scalar or one per root, in [0, 1].
        llm_temperature: divides the LLM log-probs before their softmax (> 1 flattens the LLM prior).
        min_llm_weight, max_llm_weight: bounds of the ``'adaptive'`` weight.
    """
    wm_logits = np.asarray(wm_logits, dtype=np.float64)
    legal_mask = np.asarray(legal_mask)
    llm = None if llm_logprobs is None else np.asarray(llm_logprobs, dtype=np.float64)
    _check_inputs(wm_logits, llm, legal_mask, mode)
    if llm_temperature <= 0:
        raise ValueError(f"llm_temperature must be > 0, got {llm_temperature}")
    if mode == "wm":
        return _log(_legal_softmax(wm_logits, legal_mask, "wm_logits"))
    p_llm = _legal_softmax(llm / llm_temperature, legal_mask, "llm_logprobs")
    if mode == "llm":
        return np.where(legal_mask, _log(p_llm), -np.inf)
    if mode == "fixed":
        weight = np.broadcast_to(np.asarray(llm_weight, dtype=np.float64), (wm_logits.shape[0],))
    else:
        if not 0.0 <= min_llm_weight <= max_llm_weight <= 1.0:
            raise ValueError(f"Need 0 <= min_llm_weight <= max_llm_weight <= 1, got {min_llm_weight}, {max_llm_weight}")
        weight = adaptive_llm_weight(wm_logits, legal_mask, min_llm_weight, max_llm_weight)
    if ((weight < 0) | (weight > 1)).any():
        raise ValueError(f"llm_weight must be in [0, 1], got {weight}")
    p_wm = _legal_softmax(wm_logits, legal_mask, "wm_logits")
    mixed = (1.0 - weight)[:, None] * p_wm + weight[:, None] * p_llm
    return np.where(legal_mask, _log(mixed), -np.inf)


@dataclass
class MixedRootPrior:
    """The mixed logits and the LLM weight each root received (for logging)."""

    logits: np.ndarray  # [B, A], -inf on illegal actions
    llm_weight: np.ndarray  # [B] in [0, 1]: 0 in 'wm' mode, 1 in 'llm' mode


class RootPriorMixer:
    """Configured wrapper around :func:`mix_root_logits` (the policy owns one; eval may override the mode)."""

    config = dict(
        # (str) 'wm' | 'llm' | 'fixed' | 'adaptive': how the root prior is formed (see root_prior.py)
        mode="fixed",
        # (float) LLM weight of the probability-space mixture in 'fixed' mode
        llm_weight=0.5,
        # (float) temperature dividing the LLM log-probs before their softmax
        llm_temperature=1.0,
        # (float) LLM weight in 'adaptive' mode when the world model is one-hot confident
        min_llm_weight=0.3,
        # (float) LLM weight in 'adaptive' mode when the world model's policy is uniform
        max_llm_weight=0.7,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(dict(cls.config))

    def __init__(self, cfg: Mapping | None = None) -> None:
        self.cfg = merge_strict(self.default_config(), cfg, where="root_prior")
        if self.cfg.mode not in MIX_MODES:
            raise ValueError(f"root_prior.mode must be one of {MIX_MODES}, got {self.cfg.mode!r}")

    def mix(
        self, wm_logits: np.ndarray, llm_logprobs: np.ndarray | None, legal_mask: np.ndarray, mode: str | None = None
    ) -> MixedRootPrior:
        mode = self.cfg.mode if mode is None else mode
        cfg = self.cfg
        logits = mix_root_logits(
            wm_logits, llm_logprobs, legal_mask, mode, cfg.llm_weight, cfg.llm_temperature,
            cfg.min_llm_weight, cfg.max_llm_weight,
        )
        batch = np.asarray(wm_logits).shape[0]
        if mode == "wm":
            weight = np.zeros(batch)
        elif mode == "llm":
            weight = np.ones(batch)
        elif mode == "fixed":
            weight = np.full(batch, float(cfg.llm_weight))
        else:
            weight = adaptive_llm_weight(wm_logits, np.asarray(legal_mask), cfg.min_llm_weight, cfg.max_llm_weight)
        return MixedRootPrior(logits=logits, llm_weight=weight)
