"""Fine-tuning of the LLM prior from search results: distillation of visit counts plus advantage-weighted RL.

Losses per sample (state with K candidate actions, q = the LLM's candidate distribution from the shared-prefix
scorer, with gradients):

* ``llm/sft_loss``: cross-entropy H(visits, q) between the MCTS visit distribution and q, which distils the search
  into the LLM instead of imitating only the executed action;
* ``llm/rl_loss``: PPO-clipped, advantage-weighted log-likelihood of the executed action, the ratio taken against
  the log-prob the prior gave that action at collection time (``LLMSample.old_prior_logprob``; so the clip binds
  when the data are stale; it is not recomputed right before the update, which made upstream's clipping
  decorative). The action was drawn from MCTS visit counts, not from the prior, so this ratio is no importance
  ratio (the prior is not the behaviour policy): it is a trust region that keeps q near the old prior;
* ``llm/kl``: the k3 estimator of KL(q || q_ref) to the frozen initial model, averaged under q over all candidates
  (which makes it the exact KL over candidates); log-ratios are clamped *before* the exponential.

Advantages (``advantage_normalization``): raw advantages are in game points (+10 for one award on detective) while
the SFT cross-entropy is about log K, so the RL term would dwarf distillation; 'batch' z-scores them over the batch,
'group' within each ``group_id`` (the buffer's groups: steps at the same state), 'none' keeps the raw values. The
metrics report the raw advantage scale (``llm/advantage_raw_mean|std|abs_max``) and the weighted terms
(``llm/sft_term``, ``llm/rl_term``, ``llm/kl_term``; ``llm/rl_term_abs`` is the mean of |rl|, the RL term's scale, as
centred advantages make its mean about 0) next to the unweighted losses.

Total = sft_weight * sft + rl_weight * rl + kl_coef * kl. Full fine-tuning or LoRA (peft), AdamW, gradient
accumulation over ``grad_accum`` calls, clipping, warm-up and cosine/linear decay. After every optimiser step the
With ``score_rule='pmi'`` q is the softmax of log p(c | prompt) - log p(c | content-free prompt); the content-free
term is computed under the current model without gradient (in eval mode, cached per weights version), so SFT and
PPO shape the conditional log-prob only, and the KL's reference distribution uses the reference model's own term.

version bumps and attached priors sync (by reference when they share the model object).
"""
from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lzero_ext.import_utils import require
from lzero_ext.llm.loading import load_model_and_tokenizer
from lzero_ext.llm.oom import retry_on_oom
from lzero_ext.llm.prompt import PROMPT_CONFIG, PromptBuilder
from lzero_ext.llm.fused_ops import fuse_norms_and_mlp
from lzero_ext.llm.scoring import (
    SCORING_MODES, ContentFreeCache, check_score_rule, resolve_scoring_mode, score_candidates, scoring_autocast,
)
from lzero_ext.llm.types import LLMSample, WeightsFollower
from lzero_ext.utils.config import merge_strict
from lzero_ext.utils.lr_schedule import build_scheduler, check_schedule

logger = logging.getLogger(__name__)

_LOG_RATIO_CLAMP = 20.0  # PPO ratio: exp of at most e^20, so a stale old prior log-prob cannot give inf
ADVANTAGE_NORMALIZATIONS = ("none", "batch", "group")
_KL_LOG_RATIO_CLAMP = 10.0


class LLMTrainer:
    """SFT + RL trainer of a causal LM used as an action prior (see the module docstring for the objective)."""

    config = dict(
        # (str | None) Local HF model directory; None builds and uses the tiny default model.
        model_path=None,
        # (str) 'auto' (CUDA if available), 'cpu' or 'cuda[:i]'.
        device="auto",
        # (str) Weights dtype; 'float32' master weights (bf16 autocast on GPU) is the safe default for AdamW.
        dtype="float32",
        # (float) AdamW peak learning rate.
        lr=1e-5,
        # (float) AdamW decoupled weight decay.
        weight_decay=0.01,
        # (list[float]) AdamW betas.
        adam_betas=[0.9, 0.95],
        # (int) train_step calls whose gradients are accumulated into one optimiser step.
        grad_accum=1,
        # (float) Gradient-norm clip; <= 0 disables clipping (the norm is still logged).
        max_grad_norm=1.0,
        # (str) 'constant', 'cosine' or 'linear' decay after warm-up, down to min_lr_ratio * lr.
        lr_schedule="cosine",
        # (int) Optimiser steps of linear warm-up.
        warmup_steps=0,
        # (int) Optimiser steps over which the schedule decays.
        total_steps=10000,
        # (float) Final learning rate as a fraction of lr.
        min_lr_ratio=0.1,
        # (bool) Train LoRA adapters (peft) instead of all weights.
        use_lora=False,
        # (int) LoRA rank.
        lora_r=16,
        # (int) LoRA alpha (scale = alpha / r).
        lora_alpha=32,
        # (float) LoRA dropout.
        lora_dropout=0.05,
        # (list[str]) Module names that get adapters.
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        # (float) Weight of the visit-distribution cross-entropy.
        sft_weight=1.0,
        # (float) Weight of the PPO-clipped advantage-weighted log-likelihood.
        rl_weight=1.0,
        # (float) Weight of the KL to the frozen reference model; 0 skips the reference entirely.
        kl_coef=0.01,
        # (float) PPO clip range of the ratio q(a) / old_prior(a) (a trust region around the prior at collection).
        clip_eps=0.2,
        # (float) Dual-clip bound c (> 1) on the ratio for negative advantages (Ye et al., 2020); <= 1 disables it.
        dual_clip=3.0,
        # (float) Temperature of the candidate distribution; must equal the prior's for valid PPO ratios.
        temperature=1.0,
        # (bool) End candidates with EOS (must match the prior).
        append_eos=True,
        # (str) Advantage scaling before the RL loss: 'batch' (z-score over the batch), 'group' (z-score within each
        # group_id, GRPO-style; the buffer groups steps at the same state, replay_buffer.llm_group_size; singleton
        # groups get 0) or 'none' (raw advantages, in game points).
        advantage_normalization="batch",
        # (int) States per forward/backward pass.
        micro_batch_size=8,
        # Prompt settings, one commented default each in PROMPT_CONFIG (llm/prompt.py): system_prompt,
        # history_turns, max_prompt_tokens, score_rule. They must match the prior's, so training rebuilds the prompts
        # the prior scored; PriorZero's config sets them once, in policy.llm.prompt.
        **PROMPT_CONFIG,
        # (str) Shared-prefix scorer used with gradients: 'auto' (= 'lean' if supported, else 'prefix_cache'),
        # 'lean', 'prefix_cache' or 'packed'.
        scoring_mode="auto",
        # (bool) Fused RMSNorm / SwiGLU forwards (same math, fewer memory passes; weights untouched).
        fused_kernels=True,
    )

    @classmethod
    def default_config(cls):
        return merge_strict(cls.config, {}, where="llm_trainer")

    def __init__(self, cfg: Mapping | None = None) -> None:
        if cfg is not None and "group_normalize_advantages" in cfg:
            raise KeyError("llm_trainer.group_normalize_advantages was replaced by llm_trainer.advantage_normalization "
                           "('none' | 'batch' | 'group'; True -> 'group', False -> 'none')")
        self.cfg = merge_strict(self.config, cfg, where="llm_trainer")
        self._validate_config()
        model, self.tokenizer, self.model_path = load_model_and_tokenizer(
            self.cfg.model_path, self.cfg.device, self.cfg.dtype
        )
        if self.cfg.fused_kernels:
            fuse_norms_and_mlp(model)
        self.model = self._wrap_lora(model) if self.cfg.use_lora else model
        self.scoring_mode = resolve_scoring_mode(self.model, self.cfg.scoring_mode, training=True)
        self.reference = self._make_reference()
        self.prompt_builder = PromptBuilder.from_config(self.tokenizer, self.cfg)
        # score_rule='pmi': content-free terms of the trained model (per version) and of the frozen reference.
        self._content_free = {"policy": ContentFreeCache(), "reference": ContentFreeCache()}
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            parameters, lr=self.cfg.lr, betas=tuple(self.cfg.adam_betas), weight_decay=self.cfg.weight_decay
        )
        self.scheduler = build_scheduler(self.optimizer, self.cfg, "llm_trainer")
        self.step = 0
        self.version = 0
        self._accumulated_calls = 0
        self._priors: list[WeightsFollower] = []
        # (callable | None) Data parallelism: averages the trainable gradients over ranks before each optimiser
        # step, (params, ok) -> all ranks ok (DistContext.all_reduce_gradients); None in a single process.
        self.grad_sync: Callable[[list[torch.nn.Parameter], bool], bool] | None = None

    # ------------------------------------------------------------------ setup
    def _validate_config(self) -> None:
        cfg = self.cfg
        check_schedule(cfg.lr_schedule, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio, "llm_trainer")
        if cfg.scoring_mode not in ("auto",) + SCORING_MODES:
            raise ValueError(
                f"llm_trainer.scoring_mode must be 'auto' or one of {SCORING_MODES}, got {cfg.scoring_mode!r}"
            )
        for key in ("grad_accum", "micro_batch_size", "total_steps"):
            if cfg[key] < 1:
                raise ValueError(f"llm_trainer.{key} must be >= 1, got {cfg[key]}")
        if cfg.temperature <= 0:
            raise ValueError(f"llm_trainer.temperature must be > 0, got {cfg.temperature}")
        if cfg.advantage_normalization not in ADVANTAGE_NORMALIZATIONS:
            raise ValueError(f"llm_trainer.advantage_normalization must be one of {ADVANTAGE_NORMALIZATIONS}, "
                             f"got {cfg.advantage_normalization!r}")
        check_score_rule(cfg.score_rule, "llm_trainer.score_rule")
        if cfg.clip_eps <= 0 or cfg.kl_coef < 0:
            raise ValueError(f"llm_trainer needs clip_eps > 0 and kl_coef >= 0, got {cfg.clip_eps}, {cfg.kl_coef}")

    def _wrap_lora(self, model: torch.nn.Module) -> torch.nn.Module:
        require("peft", "LoRA fine-tuning (llm_trainer.use_lora=True)", "pip install peft, or set use_lora=False.")
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, lora_dropout=self.cfg.lora_dropout,
            target_modules=list(self.cfg.lora_target_modules), task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)

    def _make_reference(self) -> torch.nn.Module | None:
        """Frozen initial policy for the KL term: a copy for full fine-tuning, the adapter-free base for LoRA."""
        if self.cfg.kl_coef == 0 or self.cfg.use_lora:
            return None
        reference = copy.deepcopy(self.model).eval()
        reference.requires_grad_(False)
        return reference

    def attach_prior(self, prior: WeightsFollower) -> None:
        """Keep ``prior`` in sync: it gets this trainer's weights and version now and after every optimiser step."""
        self._priors.append(prior)
        prior.sync_from(self)

    # ------------------------------------------------------------------ training
    def train_step(self, samples: Sequence[LLMSample]) -> dict[str, float]:
        """Accumulate gradients over ``samples`` (micro-batched); step the optimiser every ``grad_accum`` calls."""
        self._validate_samples(samples)
        advantages = self._advantages(samples)
        self.model.train()
        totals = retry_on_oom(lambda size: self._accumulate_gradients(samples, advantages, size),
                              self.cfg.micro_batch_size, len(samples), where="LLM trainer",
                              config_key="policy.llm.trainer.micro_batch_size",
                              keep_micro_batch=self._keep_micro_batch, before_retry=self._discard_gradients)
        metrics = {name: value / len(samples) for name, value in totals.items()}
        metrics.update(self._scale_metrics(samples, advantages, metrics))
        metrics["llm/samples"] = float(len(samples))
        self._accumulated_calls += 1
        stepped = self._accumulated_calls >= self.cfg.grad_accum
        if stepped:
            metrics["llm/grad_norm"] = self._optimizer_step()
        metrics["llm/optimizer_step"] = float(stepped)
        metrics["llm/lr"] = self.scheduler.get_last_lr()[0]
        metrics["llm/version"] = float(self.version)
        return metrics

    def _accumulate_gradients(self, samples: Sequence[LLMSample], advantages: np.ndarray,
                              size: int) -> dict[str, float]:
        """Backward over ``samples`` in micro-batches of ``size``; returns the per-term sums for logging."""
        totals: dict[str, float] = {}
        for start in range(0, len(samples), size):
            micro = samples[start:start + size]
            with scoring_autocast(self.model):
                loss, terms = self._micro_batch_loss(micro, advantages[start:start + size])
            (loss * len(micro) / len(samples) / self.cfg.grad_accum).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value
        return totals

    def _keep_micro_batch(self, size: int) -> None:
        """After a GPU OOM: at most ``size`` samples per forward/backward for the rest of the run."""
        self.cfg.micro_batch_size = size

    def _discard_gradients(self) -> None:
        """Before retrying a step that ran out of memory: its partial gradients (an OOM inside backward leaves
        some parameters' gradients half-accumulated) and those accumulated by earlier calls of this optimiser step
        cannot be told apart, so all are dropped and the accumulation starts again."""
        if self._accumulated_calls:
            logger.warning("discarding the gradients of %d earlier train_step call(s) accumulated for this optimiser "
                           "step (grad_accum=%d) before the retry", self._accumulated_calls, self.cfg.grad_accum)
        self.optimizer.zero_grad(set_to_none=True)
        self._accumulated_calls = 0

    def _validate_samples(self, samples: Sequence[LLMSample]) -> None:
        if len(samples) == 0:
            raise ValueError("train_step got no samples")
        for index, sample in enumerate(samples):
            k = len(sample.candidates)
            if k == 0:
                raise ValueError(f"LLMSample {index} has an empty candidate list")
            visits = np.asarray(sample.visit_distribution, dtype=np.float64)
            if visits.shape != (k,):
                raise ValueError(f"LLMSample {index}: visit_distribution has shape {visits.shape}, expected ({k},)")
            if (visits < 0).any() or visits.sum() <= 0 or not np.isfinite(visits).all():
                raise ValueError(f"LLMSample {index}: visit_distribution must be finite, >= 0 and not all zero")
            if not 0 <= sample.action_index < k:
                raise ValueError(f"LLMSample {index}: action_index {sample.action_index} not in [0, {k})")
            if self.cfg.advantage_normalization == "group" and sample.group_id is None:
                raise ValueError(f"LLMSample {index} has no group_id but advantage_normalization='group'")
            if not math.isfinite(sample.advantage):
                raise ValueError(f"LLMSample {index}: advantage {sample.advantage} is not finite")

    def _advantages(self, samples: Sequence[LLMSample]) -> np.ndarray:
        """Advantages as the RL loss uses them (``advantage_normalization``; see the module docstring)."""
        advantages = np.array([s.advantage for s in samples], dtype=np.float64)
        mode = self.cfg.advantage_normalization
        if mode == "none":
            return advantages
        if mode == "batch":
            return (advantages - advantages.mean()) / (advantages.std() + 1e-6)
        groups = np.array([s.group_id for s in samples])
        normalised = np.zeros_like(advantages)
        for group in np.unique(groups):
            members = groups == group
            if members.sum() > 1:
                values = advantages[members]
                normalised[members] = (values - values.mean()) / (values.std() + 1e-6)
        return normalised

    def _scale_metrics(self, samples: Sequence[LLMSample], used: np.ndarray,
                       means: Mapping[str, float]) -> dict[str, float]:
        """Scale of each loss term and of the advantages, raw and as used, so their balance can be read off."""
        raw = np.array([s.advantage for s in samples], dtype=np.float64)
        cfg = self.cfg
        out = {
            "llm/advantage_raw_mean": float(raw.mean()),
            "llm/advantage_raw_std": float(raw.std()),
            "llm/advantage_raw_abs_max": float(np.abs(raw).max()),
            "llm/advantage_mean": float(used.mean()),
            "llm/advantage_abs_max": float(np.abs(used).max()),
            "llm/sft_term": cfg.sft_weight * means.get("llm/sft_loss", 0.0),
            "llm/rl_term": cfg.rl_weight * means.get("llm/rl_loss", 0.0),
            "llm/rl_term_abs": cfg.rl_weight * means.get("llm/rl_loss_abs", 0.0),
            "llm/kl_term": cfg.kl_coef * means.get("llm/kl", 0.0),
        }
        if cfg.advantage_normalization == "group":
            groups = [s.group_id for s in samples]
            out["llm/advantage_singleton_frac"] = float(np.mean([groups.count(g) == 1 for g in groups]))
        return out

    def _candidate_logprobs(self, model, prompts: list[str], candidates: list[list[str]],
                            reference: bool = False) -> list[torch.Tensor]:
        calibration = {}
        if self.cfg.score_rule == "pmi":  # the reference is frozen: its terms never go stale
            cache = self._content_free["reference"].sync(0) if reference else self._content_free["policy"].sync(self.version)
            calibration = dict(content_free_prompts=[self.prompt_builder.content_free_prompt(c) for c in candidates],
                               calibration=cache)
        scores = score_candidates(
            model, self.tokenizer, prompts, candidates, self.cfg.score_rule, **calibration,
            append_eos=self.cfg.append_eos, mode=self.scoring_mode, prompt_ids=self.prompt_builder.token_ids(prompts),
        )
        return [torch.log_softmax(s / self.cfg.temperature, dim=0) for s in scores]

    def _reference_logprobs(self, prompts: list[str], candidates: list[list[str]]) -> list[torch.Tensor] | None:
        if self.cfg.kl_coef == 0:
            return None
        with torch.no_grad():
            if self.cfg.use_lora:
                with self.model.disable_adapter():
                    return self._candidate_logprobs(self.model, prompts, candidates, reference=True)
            return self._candidate_logprobs(self.reference, prompts, candidates, reference=True)

    def _micro_batch_loss(
        self, samples: Sequence[LLMSample], advantages: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss of the micro-batch and the per-term sums (for sample-weighted logging)."""
        prompts = self.prompt_builder.build_batch([(s.history, s.observation, s.candidates) for s in samples])
        candidates = [list(s.candidates) for s in samples]
        reference = self._reference_logprobs(prompts, candidates)
        policy = self._candidate_logprobs(self.model, prompts, candidates)
        cfg = self.cfg
        sums = {name: 0.0 for name in ("sft_loss", "sft_kl", "rl_loss", "rl_loss_abs", "kl", "clip_frac", "ratio",
                                       "entropy")}
        losses = []
        for index, (sample, logq) in enumerate(zip(samples, policy)):
            target = torch.as_tensor(sample.visit_distribution, dtype=torch.float32, device=logq.device)
            target = target / target.sum()
            sft = -(target * logq).sum()
            target_entropy = -(target * torch.log(target.clamp_min(1e-30))).sum()
            log_ratio = (logq[sample.action_index] - sample.old_prior_logprob).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
            ratio = torch.exp(log_ratio)
            advantage = float(advantages[index])
            clipped_ratio = ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)
            objective = torch.minimum(ratio * advantage, clipped_ratio * advantage)
            if advantage < 0 and cfg.dual_clip > 1:
                # Dual-clip PPO: with a negative advantage and a stale old prior log-prob, ratio * A is unbounded
                # below; bounding it by dual_clip * A keeps one old sample from dominating the batch.
                objective = torch.maximum(objective, torch.as_tensor(cfg.dual_clip * advantage, device=ratio.device))
            rl = -objective
            loss = cfg.sft_weight * sft + cfg.rl_weight * rl
            q = logq.exp()
            if reference is not None:
                ref_log_ratio = (reference[index] - logq).clamp(-_KL_LOG_RATIO_CLAMP, _KL_LOG_RATIO_CLAMP)
                kl = (q * (torch.exp(ref_log_ratio) - 1 - ref_log_ratio)).sum()
                loss = loss + cfg.kl_coef * kl
                sums["kl"] += kl.item()
            losses.append(loss)
            sums["sft_loss"] += sft.item()
            sums["sft_kl"] += (sft - target_entropy).item()
            sums["rl_loss"] += rl.item()
            sums["rl_loss_abs"] += abs(rl.item())  # the RL term's scale (its mean is ~0 with centred advantages)
            sums["clip_frac"] += float(abs(ratio.item() - 1) > cfg.clip_eps)
            sums["ratio"] += ratio.item()
            sums["entropy"] += -(q * logq).sum().item()
        total = torch.stack(losses).mean()
        terms = {f"llm/{name}": value for name, value in sums.items()}
        terms["llm/total_loss"] = total.item() * len(samples)
        return total, terms

    def _optimizer_step(self) -> float:
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if self.grad_sync is not None:  # averaged gradients: every rank takes the same step (norm included)
            self.grad_sync(parameters, True)
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
        if math.isfinite(grad_norm):
            self.optimizer.step()
        else:
            logger.warning("Non-finite LLM gradient norm %s: skipped the optimiser step", grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._accumulated_calls = 0
        self.step += 1
        self.version += 1
        for prior in self._priors:
            prior.sync_from(self)
        return grad_norm

    # ------------------------------------------------------------------ weights
    def _merged_model(self) -> torch.nn.Module:
        """The model with LoRA merged into a copy (the trained adapters stay untouched); the model itself otherwise."""
        if not self.cfg.use_lora:
            return self.model
        return copy.deepcopy(self.model).merge_and_unload()

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights under the plain HF names (LoRA merged), for priors that hold their own copy."""
        return {name: tensor.detach() for name, tensor in self._merged_model().state_dict().items()}

    def export_hf(self, out_dir: str | os.PathLike) -> Path:
        """Write an HF model directory (LoRA merged) plus the tokenizer, loadable by transformers and vLLM."""
        out_path = Path(out_dir)
        out_path.mkdir(parents=True, exist_ok=True)
        self._merged_model().save_pretrained(out_path)
        self.tokenizer.save_pretrained(out_path)
        logger.info("Exported the LLM (version %d) to %s", self.version, out_path)
        return out_path

    def state_dict(self) -> dict:
        """Checkpoint: trainable weights (LoRA adapters only with LoRA), optimiser, scheduler, step and version."""
        if self.cfg.use_lora:
            from peft import get_peft_model_state_dict

            weights = get_peft_model_state_dict(self.model)
        else:
            weights = self.model.state_dict()
        return {
            "model": {name: tensor.detach().cpu().clone() for name, tensor in weights.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "version": self.version,
            "accumulated_calls": self._accumulated_calls,
        }

    def load_state_dict(self, state: Mapping) -> None:
        if self.cfg.use_lora:
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, state["model"])
            if result.unexpected_keys:
                raise KeyError(f"LoRA checkpoint has unexpected keys: {result.unexpected_keys[:5]}")
        else:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.version = state["version"]
        self._accumulated_calls = state["accumulated_calls"]
        for prior in self._priors:
            prior.sync_from(self)
        self._content_free["policy"].clear()  # new weights, possibly under the version number the cache holds
