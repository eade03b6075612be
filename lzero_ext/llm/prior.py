"""The LLM prior: a distribution over each state's valid actions, from a causal LM, behind one small interface.

``TransformersPrior`` (default, CPU or GPU) scores with the shared-prefix scorer in :mod:`lzero_ext.llm.scoring`;
``VLLMPrior`` uses vLLM's prompt log-probs. Scores are normalised over the candidates after dividing by the
temperature, and every result carries the version of the weights that produced it, so a learner can tell stale
priors from fresh ones.
"""
from __future__ import annotations

import abc
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lzero_ext.import_utils import is_available, require
from lzero_ext.llm.loading import load_model_and_tokenizer, resolve_model_path
from lzero_ext.llm.oom import retry_on_oom
from lzero_ext.llm.prompt import PROMPT_CONFIG, PromptBuilder
from lzero_ext.llm.fused_ops import fuse_norms_and_mlp
from lzero_ext.llm.scoring import (
    SCORING_MODES,
    ContentFreeCache,
    check_score_rule,
    content_free_prompt_ids,
    resolve_scoring_mode,
    score_candidates,
    scoring_autocast,
    tokenize_for_scoring,
)
from lzero_ext.llm.types import PriorRequest, PriorResult, WeightsSource
from lzero_ext.utils.config import merge_strict

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm")


@dataclass
class PriorCallStats:
    """What :meth:`LLMPrior.score` did since the last :meth:`pop_metrics`.

    Why: in a training loop a prior call can take several times what the scorer alone takes at the same states per
    call (``bench/llm_prior_speed.py``). These counters say which of the inputs differs (states per call, prompt
    tokens, cache hits) and whether the time goes to the model or to the host around it (prompts, cache, softmax).
    """

    calls: int = 0
    states: int = 0
    scored_states: int = 0  # cache misses: the states the model scored
    prompt_tokens: int = 0  # of the scored states' prompts
    seconds: float = 0.0  # in score()
    model_seconds: float = 0.0  # in the model's scoring, results copied to the host (so the GPU's work included)

    def pop_metrics(self) -> dict[str, float]:
        metrics = {}
        if self.calls:
            metrics['perf/prior_states_per_s'] = self.states / max(self.seconds, 1e-9)
            metrics['perf/prior_states_per_call'] = self.states / self.calls
            metrics['perf/prior_cache_hit_fraction'] = 1.0 - self.scored_states / max(self.states, 1)
            metrics['perf/prior_model_fraction'] = self.model_seconds / max(self.seconds, 1e-9)
            metrics['perf/prior_ms_per_call'] = 1000.0 * self.seconds / self.calls
        if self.scored_states:
            metrics['perf/prior_prompt_tokens_per_state'] = self.prompt_tokens / self.scored_states
        self.__init__()
        return metrics


class LLMPrior(abc.ABC):
    """Scores candidate actions; subclasses differ in the engine that runs the model."""

    config = dict(
        # (str) 'transformers' (default, CPU/GPU) or 'vllm' (GPU, needs the vllm package).
        backend="transformers",
        # (bool) If backend='vllm' but vllm is missing, log a warning and use 'transformers' instead of raising.
        allow_backend_fallback=False,
        # (str | None) Local Hugging Face model directory; None builds and uses the tiny default model.
        model_path=None,
        # (str) 'auto' (CUDA if available), 'cpu' or 'cuda[:i]'.
        device="auto",
        # (str) Weights dtype: 'auto' (bf16 on GPU, fp32 on CPU), 'float32', 'bfloat16' or 'float16'.
        dtype="auto",
        # (float) Softmax temperature over candidates, > 0; scores are divided by it before normalising.
        temperature=1.0,
        # (bool) End every candidate with EOS, so an action that is a prefix of another is not favoured.
        append_eos=True,
        # Prompt settings, one commented default each in PROMPT_CONFIG (llm/prompt.py): system_prompt,
        # history_turns, max_prompt_tokens, score_rule. PriorZero's config sets them once, in policy.llm.prompt.
        **PROMPT_CONFIG,
        # (int) States per forward pass of the transformers backend.
        micro_batch_states=32,
        # (int) Entries of the LRU cache keyed by (prompt, candidates); 0 disables it.
        cache_size=4096,
        # (int) score_rule='pmi': (action list, candidate) pairs whose content-free log-prob is kept (per version).
        content_free_cache_size=65536,
        # (str) Shared-prefix scorer: 'auto' (= 'lean' if the model is Qwen2/Llama-like, else 'prefix_cache'),
        # 'lean', 'prefix_cache' (HF forward: prefill + packed candidates) or 'packed' (HF forward, one pass).
        scoring_mode="auto",
        # (bool) Transformers backend: fused RMSNorm / SwiGLU forwards (same math, fewer memory passes).
        fused_kernels=True,
        # (bool) Transformers backend, lean scorer on CUDA: run the decoder layers through torch.compile (a one-off
        # compile of about a minute, then fewer memory passes per layer: +24% states/s for the 0.5B shape on an H100).
        # Ignored on CPU; if compilation fails, the prior logs why and scores eagerly.
        compile_layers=True,
        # (bool) Transformers backend, lean scorer: prefill the prompts' real tokens back to back (flash varlen on
        # CUDA) instead of padded to the longest. Off: on one H200 (SmolLM2-135M) it gained at some batch sizes and
        # prompt lengths and lost at others, 8 states per call included (docs/results/gpu_speed.md, section 7).
        packed_prefill=False,
        # (float) vLLM only: fraction of GPU memory vLLM may take.
        vllm_gpu_memory_utilization=0.3,
        # (bool) vLLM only: disable CUDA graphs (faster start, slower steps).
        vllm_enforce_eager=False,
    )

    @classmethod
    def default_config(cls):
        return merge_strict(cls.config, {}, where="llm_prior")

    def __init__(self, cfg: Mapping) -> None:
        self.cfg = merge_strict(self.config, cfg, where="llm_prior")
        if self.cfg.temperature <= 0:
            raise ValueError(f"llm_prior.temperature must be > 0, got {self.cfg.temperature}")
        if self.cfg.scoring_mode not in ("auto",) + SCORING_MODES:
            raise ValueError(
                f"llm_prior.scoring_mode must be 'auto' or one of {SCORING_MODES}, got {self.cfg.scoring_mode!r}"
            )
        check_score_rule(self.cfg.score_rule, "llm_prior.score_rule")
        self.weights_version = 0
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()
        # score_rule='pmi': content-free log-probs per candidate, for the current weights version.
        self.content_free = ContentFreeCache(self.cfg.content_free_cache_size)
        self.prompt_builder: PromptBuilder | None = None
        self.stats = PriorCallStats()

    def score(self, requests: Sequence[PriorRequest]) -> list[PriorResult]:
        """Log-probs over each request's candidates (normalised with the temperature), tagged with the version."""
        for index, request in enumerate(requests):
            if len(request.candidates) == 0:
                raise ValueError(f"PriorRequest {index} has an empty candidate list; there is nothing to score")
        tic = time.perf_counter()
        prompts = self.prompt_builder.build_batch([(r.history, r.observation, r.candidates) for r in requests])
        keys = [(prompt, tuple(r.candidates)) for prompt, r in zip(prompts, requests)]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        stats = self.stats
        if missing:
            missing_prompts = [key[0] for key in missing]
            stats.prompt_tokens += sum(self.prompt_builder.token_counts(missing_prompts))
            model_tic = time.perf_counter()
            raw_scores = self._score_prompts(missing_prompts, [list(key[1]) for key in missing])
            stats.model_seconds += time.perf_counter() - model_tic
            for key, raw in zip(missing, raw_scores):
                self._remember(key, self._normalise(raw))
        results = []
        for key in keys:
            self._cache.move_to_end(key)
            results.append(PriorResult(logprobs=self._cache[key].copy(), version=self.weights_version))
        self._trim_cache()
        stats.calls += 1
        stats.states += len(requests)
        stats.scored_states += len(missing)
        stats.seconds += time.perf_counter() - tic
        return results

    @abc.abstractmethod
    def _score_prompts(self, prompts: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
        """Raw fp32 candidate log-likelihoods per prompt (before temperature and normalisation)."""

    @abc.abstractmethod
    def load_weights(self, state_dict_or_model: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        """Replace the weights (full, merged state dict or a module with the same architecture); bumps the version."""

    def sync_from(self, trainer: WeightsSource) -> None:
        """Take the trainer's current weights and version."""
        self.load_weights(trainer.merged_state_dict())
        self.content_free.clear()  # a checkpoint load can change the weights under an unchanged version
        self._set_version(trainer.version)

    def _set_version(self, version: int) -> None:
        if version != self.weights_version:
            self._cache.clear()
            self.content_free.clear()
        self.weights_version = version

    def _content_free_args(self, candidates: list[list[str]]) -> dict:
        """What the scorer needs for score_rule='pmi' (nothing for the other rules)."""
        if self.cfg.score_rule != "pmi":
            return {}
        return dict(content_free_prompts=[self.prompt_builder.content_free_prompt(c) for c in candidates],
                    calibration=self.content_free.sync(self.weights_version))

    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        scaled = torch.as_tensor(raw, dtype=torch.float64) / self.cfg.temperature
        return torch.log_softmax(scaled, dim=0).to(torch.float32).numpy()

    def _remember(self, key: tuple[str, tuple[str, ...]], logprobs: np.ndarray) -> None:
        # Kept at least until this call's results are assembled, even with cache_size=0; _trim_cache bounds it.
        self._cache[key] = logprobs

    def _trim_cache(self) -> None:
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)


class TransformersPrior(LLMPrior):
    """Default backend: a transformers model scored with the shared-prefix scorer, micro-batched over states.

    It may share its model object with an :class:`~lzero_ext.llm.trainer.LLMTrainer` (see :meth:`from_trainer`):
    then an optimiser step changes the prior's weights in place, with no copy, and only the version is synced.
    """

    def __init__(self, cfg: Mapping, model: torch.nn.Module | None = None, tokenizer=None) -> None:
        super().__init__(cfg)
        if (model is None) != (tokenizer is None):
            raise ValueError("Pass both model and tokenizer to share them, or neither to load from model_path")
        if model is None:
            model, tokenizer, _ = load_model_and_tokenizer(self.cfg.model_path, self.cfg.device, self.cfg.dtype)
        self.model = model
        self.tokenizer = tokenizer
        if self.cfg.fused_kernels:
            fuse_norms_and_mlp(model)
        self.scoring_mode = resolve_scoring_mode(model, self.cfg.scoring_mode, training=False)
        if self.cfg.packed_prefill and self.scoring_mode != "lean":
            raise ValueError(f"llm_prior.packed_prefill needs the lean scorer; this model scores with "
                             f"{self.scoring_mode!r} (scoring_mode={self.cfg.scoring_mode!r})")
        self._compile_layers = bool(self.cfg.compile_layers)
        self.prompt_builder = PromptBuilder.from_config(tokenizer, self.cfg)

    @classmethod
    def from_trainer(cls, trainer: WeightsSource, cfg: Mapping | None = None) -> "TransformersPrior":
        """A prior that shares the trainer's model and tokenizer and follows its version after every step."""
        prior = cls(cfg or {}, model=trainer.model, tokenizer=trainer.tokenizer)
        trainer.attach_prior(prior)
        return prior

    def _score_prompts(self, prompts: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), scoring_autocast(self.model):
                # _score reads cfg.micro_batch_states, which retry_on_oom lowers through _keep_micro_batch.
                scores = retry_on_oom(lambda _: self._score(prompts, candidates), self.cfg.micro_batch_states,
                                      len(prompts), where="LLM prior", config_key="policy.llm.prior.micro_batch_states",
                                      keep_micro_batch=self._keep_micro_batch)
        finally:
            self.model.train(was_training)
        return [s.float().cpu().numpy() for s in scores]

    def _keep_micro_batch(self, states: int) -> None:
        """After a GPU OOM: score at most ``states`` states per forward for the rest of the run."""
        self.cfg.micro_batch_states = states

    def _score(self, prompts: list[str], candidates: list[list[str]]) -> list[torch.Tensor]:
        prompt_ids = self.prompt_builder.token_ids(prompts)  # counted while building: not tokenised again

        def run(compiled: bool) -> list[torch.Tensor]:
            return score_candidates(
                self.model, self.tokenizer, prompts, candidates, self.cfg.score_rule, **self._content_free_args(candidates),
                append_eos=self.cfg.append_eos, mode=self.scoring_mode,
                max_states_per_forward=self.cfg.micro_batch_states, compiled=compiled, prompt_ids=prompt_ids,
                packed_prefill=self.cfg.packed_prefill,
            )

        on_cuda = self.model.get_input_embeddings().weight.is_cuda
        if not (self._compile_layers and self.scoring_mode == "lean" and on_cuda):
            return run(False)
        try:
            return run(True)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # a torch.compile failure (no triton, no C compiler, ...): keep working eagerly
            logger.warning("torch.compile of the scorer failed (%s: %s); scoring without compilation from now on",
                           type(error).__name__, error)
            self._compile_layers = False
            return run(False)

    def load_weights(self, state_dict_or_model: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        if isinstance(state_dict_or_model, torch.nn.Module):
            if state_dict_or_model is not self.model:
                self.model.load_state_dict(state_dict_or_model.state_dict())
        else:
            self.model.load_state_dict(dict(state_dict_or_model))
        self._set_version(self.weights_version + 1)

    def sync_from(self, trainer: WeightsSource) -> None:
        if trainer.model is not self.model:  # a separate copy (e.g. another device or dtype): copy merged weights
            self.model.load_state_dict(trainer.merged_state_dict())
        self.content_free.clear()  # a checkpoint load can change the weights under an unchanged version
        self._set_version(trainer.version)


class VLLMPrior(LLMPrior):
    """vLLM backend (GPU): candidate scores from prompt log-probs of ``prompt + candidate`` sequences.

    vLLM's automatic prefix caching makes the shared prompt cost one prefill per state. Weights are updated through
    ``LLM.collective_rpc`` on the worker extension :class:`lzero_ext.llm.vllm_worker.WeightUpdateExtension`,
    vLLM's documented path for in-place RLHF weight updates, followed by a prefix-cache reset.
    """

    def __init__(self, cfg: Mapping) -> None:
        super().__init__(cfg)
        require("vllm", "The LLM prior backend 'vllm'", "Install vllm on a CUDA machine, or set backend='transformers'.")
        import vllm

        path = resolve_model_path(self.cfg.model_path)
        self._llm = vllm.LLM(
            model=str(path),
            dtype="bfloat16",
            enable_prefix_caching=True,
            gpu_memory_utilization=self.cfg.vllm_gpu_memory_utilization,
            enforce_eager=self.cfg.vllm_enforce_eager,
            worker_extension_cls="lzero_ext.llm.vllm_worker.WeightUpdateExtension",
        )
        self._sampling_params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        self.tokenizer = self._llm.get_tokenizer()
        self.prompt_builder = PromptBuilder.from_config(self.tokenizer, self.cfg)

    def _score_prompts(self, prompts: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
        prompt_ids, candidate_ids = tokenize_for_scoring(self.tokenizer, prompts, candidates, self.cfg.append_eos)
        sums = self._summed_logprobs(prompt_ids, candidate_ids)
        if self.cfg.score_rule == "mean":
            sums = [s / np.array([len(c) for c in cands]) for s, cands in zip(sums, candidate_ids)]
        elif self.cfg.score_rule == "pmi":
            content_free_ids = content_free_prompt_ids(
                self.tokenizer, [self.prompt_builder.content_free_prompt(c) for c in candidates])
            terms = self.content_free.sync(self.weights_version).terms(content_free_ids, candidate_ids,
                                                                       self._summed_logprobs)
            sums = [s - t for s, t in zip(sums, terms)]
        return [np.asarray(s, dtype=np.float32) for s in sums]

    def _summed_logprobs(self, prompt_ids: list[list[int]], candidate_ids: list[list[list[int]]]) -> list[np.ndarray]:
        """Summed log-prob of each candidate's tokens after its prompt, from vLLM's prompt log-probs."""
        inputs = [{"prompt_token_ids": list(p) + list(c)} for p, cands in zip(prompt_ids, candidate_ids) for c in cands]
        outputs = iter(self._llm.generate(inputs, self._sampling_params, use_tqdm=False))
        results = []
        for prompt, cands in zip(prompt_ids, candidate_ids):
            scores = []
            for tokens in cands:
                position_logprobs = next(outputs).prompt_logprobs[len(prompt):]
                scores.append(sum(entry[token].logprob for entry, token in zip(position_logprobs, tokens)))
            results.append(np.asarray(scores, dtype=np.float64))
        return results

    def load_weights(self, state_dict_or_model: Mapping[str, torch.Tensor] | torch.nn.Module) -> None:
        if isinstance(state_dict_or_model, torch.nn.Module):
            state_dict_or_model = state_dict_or_model.state_dict()
        weights = [(name, tensor.detach().to("cpu")) for name, tensor in state_dict_or_model.items()]
        self._llm.collective_rpc("load_named_weights", args=(weights,))
        self._llm.reset_prefix_cache()
        self._set_version(self.weights_version + 1)


def build_prior(cfg: Mapping) -> LLMPrior:
    """Create the prior that ``cfg.backend`` names (unknown config keys raise ``KeyError``)."""
    merged = merge_strict(LLMPrior.config, cfg, where="llm_prior")
    if merged.backend not in BACKENDS:
        raise ValueError(f"llm_prior.backend must be one of {BACKENDS}, got {merged.backend!r}")
    if merged.backend == "vllm":
        if is_available("vllm"):
            return VLLMPrior(merged)
        if not merged.allow_backend_fallback:
            require("vllm", "The LLM prior backend 'vllm'", "Install vllm, or set backend='transformers' "
                    "(or allow_backend_fallback=True to fall back automatically).")
        logger.warning("vllm is not installed: falling back to the transformers prior backend (allow_backend_fallback)")
    return TransformersPrior(merged)
