"""The PriorZero policy: a UniZero world model searched by our batched MCTS, with an LLM prior at the root.

One object owns every learned part, so checkpoints and the DI-engine registries see one policy:

* world model: :class:`~lzero_ext.policy.world_model.TextUniZeroModel`, trained by
  :class:`~lzero_ext.policy.wm_learner.WorldModelLearner` (UniZero's losses, policy head toward the visit counts);
* search: :class:`~lzero_ext.mcts.search.BatchedMCTS` over :class:`~lzero_ext.mcts.unizero_adapter.UniZeroSearchModel`,
  root prior mixed by :class:`~lzero_ext.mcts.root_prior.RootPriorMixer` (modes wm / llm / fixed / adaptive);
* LLM: one :class:`~lzero_ext.llm.trainer.LLMTrainer` owns the weights; the prior backend shares them (transformers)
  or receives them after each update (vLLM), tagged with the trainer's weights version.

Acting (collect and eval) is one batched step over all envs: world-model root inference, one LLM prior call for all
envs, mixing, one search, action selection. Learning is two explicit calls, :meth:`train_world_model` and
:meth:`train_llm`, so schedules decide their frequencies; ``_forward_learn`` (DI-engine's learner entry) runs both.
The acting records and the step from a search's output to a stored decision live in :mod:`lzero_ext.policy.acting`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ding.policy import Policy
from ding.policy.command_mode_policy_instance import DummyCommandModePolicy
from ding.utils import POLICY_REGISTRY
from easydict import EasyDict

from lzero_ext.buffer.game_buffer import PriorZeroGameBuffer
from lzero_ext.buffer.game_segment import StepObservation
from lzero_ext.distributed import DistContext
from lzero_ext.llm.prior import LLMPrior, TransformersPrior, build_prior
from lzero_ext.llm.prompt import PROMPT_CONFIG, PROMPT_KEYS
from lzero_ext.llm.trainer import LLMTrainer
from lzero_ext.llm.types import PriorRequest, Turn
from lzero_ext.llm.update import BuiltinLLMUpdate, LLMUpdate
from lzero_ext.mcts.root_prior import RootPriorMixer
from lzero_ext.mcts.search import BatchedMCTS, SearchConfig, select_action
from lzero_ext.mcts.unizero_adapter import UniZeroNodeKVSearchModel
from lzero_ext.orz.hook import OrzTrainerHook, build_llm_update
from lzero_ext.policy.acting import ActOutput, ActStats, SearchResult, act_output
from lzero_ext.policy.wm_learner import WorldModelLearner
from lzero_ext.policy.world_model import TextUniZeroModel, build_world_model

logger = logging.getLogger(__name__)

# Keys the LLM prior and trainer must agree on, or PPO ratios and SFT targets refer to different distributions. The
# prompt settings (PROMPT_KEYS) are not among them: both read them from the one section policy.llm.prompt.
SHARED_LLM_KEYS = ("model_path", "temperature", "append_eos")
EVAL_MODES = ("mcts", "llm_only", "wm_only")
MONITOR_VARS_LEARN = (
    "wm/total_loss", "wm/obs_loss", "wm/reward_loss", "wm/value_loss", "wm/policy_loss", "wm/grad_norm",
    "llm/sft_loss", "llm/rl_loss", "llm/kl", "llm/total_loss", "llm/clip_frac", "llm/grad_norm", "llm/version",
)


def _without_prompt_keys(component_config: Mapping[str, Any]) -> dict[str, Any]:
    """A prior/trainer config section minus the prompt settings, which policy.llm.prompt holds for both."""
    return {key: value for key, value in component_config.items() if key not in PROMPT_KEYS}


@POLICY_REGISTRY.register('priorzero')
class PriorZeroPolicy(Policy):
    """LLM-prior MCTS over a text UniZero world model; see the module docstring."""

    config = dict(
        # (str) Registry name.
        type='priorzero',
        # (str) Device of the world model and search: 'cpu', 'cuda' or 'auto' (cuda when available).
        device='cpu',
        # (dict) World model (TextUniZeroModel.config).
        model=TextUniZeroModel.config,
        # (dict) Search (SearchConfig fields).
        mcts=dataclasses.asdict(SearchConfig()),
        # (dict) Root prior mixing (RootPriorMixer.config).
        root_prior=RootPriorMixer.config,
        # (int) Searches between clearing the world model's KV caches (bounds memory; UniZero uses 200).
        kv_cache_clear_interval=200,
        llm=dict(
            # (bool) Use the LLM prior at all; False gives world-model-only PriorZero (root_prior.mode must be 'wm').
            enable=True,
            # (bool) Train the LLM (SFT + RL); False keeps the prior frozen.
            train=True,
            # (dict) Prompt settings (PROMPT_CONFIG: system_prompt, history_turns, max_prompt_tokens, score_rule),
            # the one place to set them: the prior and the trainer both read this section, and the collector,
            # evaluator and replay buffer keep history_turns past turns (get_priorzero_config derives their
            # history_length from it), so training rebuilds exactly the prompts the prior scored.
            prompt=PROMPT_CONFIG,
            # (dict) Prior backend (LLMPrior.config without the prompt keys).
            prior=_without_prompt_keys(LLMPrior.config),
            # (dict) Trainer (LLMTrainer.config without the prompt keys).
            trainer=_without_prompt_keys(LLMTrainer.config),
            # (bool) Train the LLM through Open-Reasoner-Zero's RayPPOTrainer (GPU + ORZ stack) instead of LLMTrainer.
            use_orz_trainer=False,
            # (bool) With use_orz_trainer=True but no usable ORZ stack: log a warning and use LLMTrainer instead of
            # failing at start.
            allow_builtin_trainer_fallback=False,
            # (dict) ORZ hook settings (OrzTrainerHook.config); orz.exp is free-form (ORZ BasePPOExpConfig fields).
            orz=OrzTrainerHook.config,
        ),
        learn=dict(
            # (int) World-model batch size (windows per update).
            batch_size=64,
            # (int) LLM samples per LLM update.
            llm_batch_size=16,
            # (bool) Bootstrap value targets and LLM advantages from the world model's target network
            # (UniZero-style) instead of the stored MCTS root values.
            use_target_model_values=True,
            # (dict) World-model learner (WorldModelLearner.config).
            wm=WorldModelLearner.config,
        ),
        collect=dict(
            # (float) Visit-count temperature for action sampling in collect.
            temperature=1.0,
            # (int) Seed of the collect-side RNG (noise, action sampling); eval uses seed + 1.
            seed=0,
        ),
        eval=dict(
            # (str) Default eval mode: 'mcts' (full PriorZero), 'llm_only' (argmax of the prior), 'wm_only'.
            mode='mcts',
            # (float) Action selection in eval: 0 = the most visited action (MuZero's greedy protocol); > 0 = sample
            # from visits ** (1 / temperature), without exploration noise. A deterministic policy in a deterministic
            # text game repeats any state it revisits forever (take X, drop X, ...), so text-game papers usually
            # score the stochastic policy (Jericho: the last 100 training episodes).
            temperature=0.0,
        ),
        other=dict(
            # (dict) Replay buffer (PriorZeroGameBuffer.config).
            replay_buffer=PriorZeroGameBuffer.config,
        ),
    )

    def default_model(self) -> tuple[str, list[str]]:
        return 'TextUniZeroModel', ['lzero_ext.policy.world_model']

    def _create_model(self, cfg: EasyDict, model: torch.nn.Module | None = None) -> torch.nn.Module:
        """Build the text world model ourselves: its config is not a MODEL_REGISTRY kwargs dict."""
        if model is not None:
            return model
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.pop('type', None)
        model_cfg.pop('import_names', None)
        model_cfg.device = self._resolve_device(cfg.device)
        return build_world_model(model_cfg)

    @staticmethod
    def _resolve_device(device: str) -> str:
        if device == 'auto':
            return 'cuda' if torch.cuda.is_available() else 'cpu'
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine")
        if not (device == 'cpu' or device.startswith('cuda')):
            raise ValueError(f"device must be 'cpu', 'cuda[:i]' or 'auto', got {device!r}")
        return device

    # ------------------------------------------------------------------ init
    def __init__(self, cfg: EasyDict, model: torch.nn.Module | None = None,
                 enable_field: list[str] | None = None) -> None:
        self._cfg = cfg
        self._validate()
        self._llm_update: LLMUpdate | None = None
        self._llm_trainer: LLMTrainer | None = None  # the built-in trainer, when it is the update path
        self._llm_prior: LLMPrior | None = None
        self._mcts: BatchedMCTS | None = None
        super().__init__(cfg, model, enable_field)

    def _init_learn(self) -> None:
        self._batch_size = self._cfg.learn.batch_size
        self._priority = False
        self._wm_learner = WorldModelLearner(self._model, self._cfg.learn.wm)
        if self._llm_trains:
            llm_cfg = EasyDict(dict(self._cfg.llm, trainer=self.llm_component_config('trainer')))
            self._llm_update = build_llm_update(llm_cfg, lambda: LLMTrainer(llm_cfg.trainer))
            if isinstance(self._llm_update, BuiltinLLMUpdate):
                self._llm_trainer = self._llm_update.trainer
        self._ensure_prior()

    def _init_collect(self) -> None:
        self._search_model = UniZeroNodeKVSearchModel(self._model)
        self._mcts = BatchedMCTS(SearchConfig.from_dict(self._cfg.mcts))
        self._mixer = RootPriorMixer(self._cfg.root_prior)
        self._contexts: dict[str, dict[int, tuple[np.ndarray, int]]] = {'collect': {}, 'eval': {}}
        self._rngs = {'collect': np.random.default_rng(self._cfg.collect.seed),
                      'eval': np.random.default_rng(self._cfg.collect.seed + 1)}
        self._searches = 0
        self._ensure_prior()
        self.act_stats = ActStats(prior=self._llm_prior.stats if self._llm_prior is not None else None)

    def _init_eval(self) -> None:
        if self._mcts is None:  # eval-only policy
            self._init_collect()

    @property
    def _llm_trains(self) -> bool:
        return bool(self._cfg.llm.enable and self._cfg.llm.train)

    def _ensure_prior(self) -> None:
        """Create the prior once; with the transformers backend it shares the trainer's model (one weights owner)."""
        if self._llm_prior is not None or not self._cfg.llm.enable:
            return
        prior_cfg = self.llm_component_config('prior')
        if self._llm_trainer is not None and self._cfg.llm.prior.backend == 'transformers':
            self._llm_prior = TransformersPrior.from_trainer(self._llm_trainer, prior_cfg)
        else:  # vLLM backend, or ORZ owns the weights: the prior receives them after every update
            self._llm_prior = build_prior(prior_cfg)
            if self._llm_update is not None:
                self._llm_update.attach_prior(self._llm_prior)

    def llm_component_config(self, name: str) -> EasyDict:
        """``policy.llm.prior`` or ``policy.llm.trainer`` with the prompt settings of ``policy.llm.prompt``."""
        return EasyDict(dict(self._cfg.llm[name], **self._cfg.llm.prompt))

    def _validate(self) -> None:
        cfg = self._cfg
        if cfg.llm.enable:
            for key in SHARED_LLM_KEYS:
                if cfg.llm.prior[key] != cfg.llm.trainer[key]:
                    raise ValueError(
                        f"policy.llm.prior.{key}={cfg.llm.prior[key]!r} differs from policy.llm.trainer.{key}="
                        f"{cfg.llm.trainer[key]!r}; they must match (set both, or use get_priorzero_config)"
                    )
            # Histories shorter than history_turns: the prior (collector, evaluator) or the trainer (buffer) would
            # see fewer turns than the other, and the SFT targets and PPO ratios would refer to other prompts.
            turns = cfg.llm.prompt.history_turns
            keepers = {'other.replay_buffer': cfg.other.replay_buffer, 'collect.collector': cfg.collect.get('collector'),
                       'eval.evaluator': cfg.eval.get('evaluator')}
            for where, section in keepers.items():
                if section is not None and section.get('history_length', turns) < turns:
                    raise ValueError(
                        f"policy.{where}.history_length={section.history_length} is below "
                        f"policy.llm.prompt.history_turns={turns}; set history_turns only (get_priorzero_config "
                        f"derives every history_length from it)"
                    )
        elif cfg.root_prior.mode != 'wm':
            raise ValueError(f"policy.llm.enable=False needs policy.root_prior.mode='wm', got {cfg.root_prior.mode!r}")
        if cfg.model.num_simulations < cfg.mcts.num_simulations:
            raise ValueError(
                f"policy.model.num_simulations={cfg.model.num_simulations} sizes the world model's search caches and "
                f"must be >= policy.mcts.num_simulations={cfg.mcts.num_simulations}"
            )
        if cfg.eval.mode not in EVAL_MODES:
            raise ValueError(f"policy.eval.mode must be one of {EVAL_MODES}, got {cfg.eval.mode!r}")
        if cfg.collect.temperature <= 0 or cfg.eval.temperature < 0:
            raise ValueError(f"policy.collect.temperature must be > 0 and policy.eval.temperature >= 0, got "
                             f"{cfg.collect.temperature!r} and {cfg.eval.temperature!r}")

    # ------------------------------------------------------------------ acting
    @property
    def llm_prior(self) -> LLMPrior | None:
        return self._llm_prior

    def prior_requests(self, observations: Sequence[StepObservation], histories: Sequence[list[Turn]]) -> list[PriorRequest]:
        return [PriorRequest(history=list(h), observation=o.raw_text, candidates=list(o.valid_actions))
                for o, h in zip(observations, histories)]

    def score_prior(
        self, observations: Sequence[StepObservation], histories: Sequence[list[Turn]]
    ) -> tuple[np.ndarray, list[np.ndarray], int]:
        """One batched prior call for all envs: ``[B, A]`` log-probs (-inf outside the candidates), per-env lists."""
        num_actions = self._cfg.model.action_space_size
        padded = np.full((len(observations), num_actions), -np.inf, dtype=np.float32)
        if self._llm_prior is None:
            return padded, [np.zeros(0, dtype=np.float32)] * len(observations), -1
        results = self._llm_prior.score(self.prior_requests(observations, histories))  # timed in its stats
        for row, (obs, result) in enumerate(zip(observations, results)):
            padded[row, obs.action_indices] = result.logprobs
        return padded, [r.logprobs for r in results], results[0].version if results else -1

    def act(
        self,
        env_ids: Sequence[int],
        observations: Sequence[StepObservation],
        histories: Sequence[list[Turn]],
        mode: str,
        eval_mode: str = 'mcts',
        temperature: float | None = None,
    ) -> list[ActOutput]:
        """Decide one action for each env (``mode`` 'collect' samples with noise; 'eval' has no noise and uses
        ``temperature``, default ``eval.temperature``: 0 = most visited action)."""
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
        legal = np.stack([o.action_mask.astype(bool) for o in observations])
        use_llm = self._llm_prior is not None and eval_mode != 'wm_only'
        llm_padded, llm_lists, version = (
            self.score_prior(observations, histories) if use_llm
            else (None, [np.zeros(0, dtype=np.float32)] * len(observations), -1)
        )
        rng = self._rngs[mode]
        if eval_mode == 'llm_only':
            actions = np.where(legal, llm_padded, -np.inf).argmax(axis=1)
            search = None
        else:
            search = self._search(env_ids, observations, legal, llm_padded, mode, eval_mode, rng)
            if temperature is None:
                temperature = self._cfg.collect.temperature if mode == 'collect' else self._cfg.eval.temperature
            actions = select_action(search.output.visit_counts, temperature, deterministic=temperature == 0,
                                    rng=rng, legal_mask=legal)
        context = self._contexts[mode]
        for env_id, obs, action in zip(env_ids, observations, actions):
            context[env_id] = (obs.tokens, int(action))
        num_actions = self._cfg.model.action_space_size
        return [act_output(i, int(a), observations[i], llm_lists[i], version, search, num_actions)
                for i, a in enumerate(actions)]

    def _search(self, env_ids, observations, legal, llm_padded, mode, eval_mode, rng) -> SearchResult:
        device = self._search_model.device
        obs = torch.as_tensor(np.stack([o.tokens for o in observations]), dtype=torch.long, device=device)
        context = self._contexts[mode]
        known = [env_id in context for env_id in env_ids]
        last_obs = last_actions = None
        if any(known):
            last_obs = torch.as_tensor(
                np.stack([context[e][0] if e in context else o.tokens for e, o in zip(env_ids, observations)]),
                dtype=torch.long, device=device,
            )
            last_actions = np.asarray([context[e][1] if e in context else -1 for e in env_ids], dtype=np.int64)
        timesteps = np.asarray([o.timestep for o in observations], dtype=np.int64)
        self._maybe_clear_caches()
        root = self._search_model.initial_inference(obs, last_actions=last_actions, timesteps=timesteps,
                                                    last_obs=last_obs)
        mix_mode = 'wm' if eval_mode == 'wm_only' or self._llm_prior is None else None
        mixed = self._mixer.mix(root.policy_logits, llm_padded, legal, mode=mix_mode)
        tic = time.perf_counter()
        output = self._mcts.search(self._search_model, root.to_root_input(mixed.logits, legal),
                                   add_noise=(mode == 'collect'), rng=rng)
        stats = self.act_stats
        stats.search_seconds += time.perf_counter() - tic
        stats.tree_seconds += output.tree_seconds
        stats.searches += 1
        stats.simulations += len(env_ids) * self._mcts.cfg.num_simulations
        return SearchResult(output=output, llm_weight=mixed.llm_weight)

    def _maybe_clear_caches(self) -> None:
        self._searches += 1
        if self._searches % self._cfg.kv_cache_clear_interval == 0:
            self._search_model.clear_caches()

    def reset_contexts(self, mode: str, env_ids: Sequence[int] | None = None) -> None:
        """Forget the search context of envs that start a new episode (all envs when ``env_ids`` is None)."""
        if env_ids is None:
            self._contexts[mode].clear()
            self._search_model.clear_caches()
            return
        for env_id in env_ids:
            self._contexts[mode].pop(env_id, None)

    # ------------------------------------------------------------------ learning
    def train_world_model(self, buffer: PriorZeroGameBuffer) -> dict[str, float]:
        target_fn = self._wm_learner.target_value_fn if self._cfg.learn.use_target_model_values else None
        batch = buffer.sample_world_model_batch(self._cfg.learn.batch_size, target_fn)
        return self._wm_learner.train_step(batch)

    def train_llm(self, buffer: PriorZeroGameBuffer) -> dict[str, float]:
        """One LLM update (SFT toward visit counts + RL on advantages); the prior sees the new weights after it."""
        if self._llm_update is None:
            return {}
        advantage_fn = self._wm_learner.advantage_fn if self._cfg.learn.use_target_model_values else None
        samples = buffer.sample_llm_batch(self._cfg.learn.llm_batch_size, advantage_fn)
        return self._llm_update.train(samples)

    def after_training_burst(self) -> None:
        """Refresh the world model's inference caches after its weights changed (as UniZero does)."""
        self._wm_learner.after_training_burst()
        if self._mcts is not None:  # acting is enabled: its search caches hold stale keys/values
            self._search_model.refresh_after_training()

    def _forward_learn(self, data: PriorZeroGameBuffer) -> dict[str, float]:
        """DI-engine learner entry (``ding -m serial``): one world-model update and, when the LLM trains, one LLM
        update. The buffer's ``sample`` hands over the buffer itself, since both learners sample their own batches."""
        metrics = self.train_world_model(data)
        metrics.update(self.train_llm(data))
        self.after_training_burst()
        return metrics

    def _monitor_vars_learn(self) -> list[str]:
        return list(MONITOR_VARS_LEARN)

    @property
    def weights_version(self) -> int:
        return self._llm_prior.weights_version if self._llm_prior is not None else -1

    @property
    def wm_version(self) -> int:
        """World-model weights version: the learner's applied optimiser steps, or what an acting copy last loaded."""
        learner = getattr(self, '_wm_learner', None)
        return learner.train_steps if learner is not None else getattr(self, '_loaded_wm_version', 0)

    # ------------------------------------------------------------------ acting copies (async / Ray collection)
    def inference_state(self, include_llm: bool = True) -> dict[str, Any]:
        """Everything an acting-only copy needs, as detached CPU tensors (a snapshot, safe to ship to a thread,
        process or Ray actor while this policy keeps training).

        Keys: ``world_model`` (state dict of the acting world model), ``llm`` (full merged LLM weights under the
        plain HF names, or None when there is no LLM, when ``include_llm`` is False, or when the prior's weights
        cannot be read here, e.g. a frozen vLLM prior), ``weights_version`` (LLM) and ``wm_version``.
        """
        world_model = {k: v.detach().to('cpu', copy=True) for k, v in self._model.state_dict().items()}
        llm = None
        if include_llm and self._cfg.llm.enable:
            if self._llm_trainer is not None:  # LoRA merged; the prior shares (or copies) these weights
                source = self._llm_trainer.merged_state_dict()
            elif isinstance(self._llm_prior, TransformersPrior):  # frozen LLM, or ORZ-synced weights
                source = self._llm_prior.model.state_dict()
            else:
                source = None
            if source is not None:
                llm = {k: v.detach().to('cpu', copy=True) for k, v in source.items()}
        return dict(world_model=world_model, llm=llm, weights_version=self.weights_version,
                    wm_version=self.wm_version)

    def load_inference_state(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`inference_state` into this acting-only copy (a policy built with
        ``enable_field=['collect']`` or ``['collect', 'eval']``); ``llm=None`` keeps the current LLM weights.

        A learning policy refuses: its acting weights are its training weights (use ``learn_mode.load_state_dict``).
        """
        if getattr(self, '_wm_learner', None) is not None:
            raise ValueError("load_inference_state is for acting-only policies (enable_field=['collect', 'eval']); "
                             "a learning policy loads checkpoints with learn_mode.load_state_dict")
        if self._mcts is None:
            raise ValueError("load_inference_state needs an acting policy: build it with enable_field=['collect']")
        self._model.load_state_dict(state['world_model'])
        self._search_model.refresh_after_training()
        self._loaded_wm_version = int(state['wm_version'])
        if self._llm_prior is not None:
            if state.get('llm') is not None:
                self._llm_prior.load_weights(state['llm'])
            self._llm_prior._set_version(int(state['weights_version']))

    def rng_state(self) -> dict[str, Any]:
        return {mode: rng.bit_generator.state for mode, rng in self._rngs.items()}

    def load_rng_state(self, state: Mapping[str, Any]) -> None:
        for mode, rng_state in state.items():
            self._rngs[mode].bit_generator.state = rng_state

    def _state_dict_learn(self) -> dict[str, Any]:
        return {
            'world_model': self._wm_learner.state_dict(),
            'llm': self._llm_update.state_dict() if self._llm_update is not None else None,
        }

    def _load_state_dict_learn(self, state: Mapping[str, Any]) -> None:
        self._wm_learner.load_state_dict(state['world_model'])
        if self._llm_update is not None:
            if state['llm'] is None:
                raise ValueError("checkpoint has no LLM trainer state but this config trains the LLM")
            self._llm_update.load_state_dict(state['llm'])  # the ORZ hook refuses with what to do instead
            if self._llm_prior is not None and self._llm_trainer is not None:
                self._llm_prior.sync_from(self._llm_trainer)
        self.after_training_burst()

    def enable_data_parallel(self, dist: DistContext) -> None:
        """Data parallelism (:mod:`lzero_ext.distributed`): start every rank from rank 0's weights and average the
        world-model and LLM gradients over ranks before each optimiser step, so the weights stay identical."""
        if self._llm_update is not None and self._llm_trainer is None:
            raise NotImplementedError("data parallelism over ranks covers the built-in LLM trainer, not ORZ's")
        modules = [self._model, self._wm_learner.target_model]
        if self._llm_trainer is not None:
            modules += [m for m in (self._llm_trainer.model, self._llm_trainer.reference) if m is not None]
        for module in modules:
            dist.broadcast_state(module)
        self._wm_learner.grad_sync = dist.all_reduce_gradients
        if self._llm_trainer is not None:
            self._llm_trainer.grad_sync = dist.all_reduce_gradients
            if self._llm_prior is not None:
                self._llm_prior.sync_from(self._llm_trainer)
        self.after_training_burst()

    def export_llm(self, out_dir) -> Any:
        if self._llm_update is None:
            raise ValueError("no LLM trainer: llm.enable and llm.train must be True to export the LLM")
        return self._llm_update.export_hf(out_dir)

    # DI-engine's generic collector/evaluator interfaces; PriorZero's own workers call ``act`` directly.
    def _forward_collect(self, data: dict[int, Any], **kwargs) -> dict[int, Any]:
        return self._forward_mode(data, 'collect', **kwargs)

    def _forward_eval(self, data: dict[int, Any], **kwargs) -> dict[int, Any]:
        return self._forward_mode(data, 'eval', **kwargs)

    def _forward_mode(self, data: dict[int, Any], mode: str, histories: dict[int, list[Turn]] | None = None,
                      eval_mode: str | None = None, temperature: float | None = None) -> dict[int, ActOutput]:
        """``eval_mode`` None: full search when collecting, ``policy.eval.mode`` when evaluating."""
        if eval_mode is None:
            eval_mode = self._cfg.eval.mode if mode == 'eval' else 'mcts'
        env_ids = sorted(data)
        observations = [StepObservation.from_env_obs(data[e]) for e in env_ids]
        hist = [list((histories or {}).get(e, [])) for e in env_ids]
        outputs = self.act(env_ids, observations, hist, mode, eval_mode, temperature)
        return dict(zip(env_ids, outputs))

    def _reset_collect(self, data_id: list[int] | None = None) -> None:
        self.reset_contexts('collect', data_id)

    def _reset_eval(self, data_id: list[int] | None = None) -> None:
        self.reset_contexts('eval', data_id)

    def _process_transition(self, obs: Any, policy_output: Any, timestep: Any) -> dict:
        raise NotImplementedError("PriorZero's collector builds game segments itself (lzero_ext.worker.collector)")

    def _get_train_sample(self, data: list) -> list:
        raise NotImplementedError("PriorZero's collector builds game segments itself (lzero_ext.worker.collector)")


@POLICY_REGISTRY.register('priorzero_command')
class PriorZeroCommandModePolicy(PriorZeroPolicy, DummyCommandModePolicy):
    """The same policy with DI-engine's command mode, so ``ding -m serial`` can drive it."""
