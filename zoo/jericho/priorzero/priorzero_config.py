"""PriorZero configs for Jericho games, in LightZero's zoo form.

``get_priorzero_config(env_id=..., ...)`` returns ``(main_config, create_config)`` EasyDicts;
``get_priorzero_debug_config`` is the quick-test variant (tiny sizes, minutes on a 2-core CPU). The module-level
``main_config`` / ``create_config`` let other zoos import them and let DI-engine's CLI run this file::

    ding -m serial -c zoo/jericho/priorzero/priorzero_config.py -s 0

Every key has one default, in the component that reads it (``PriorZeroPolicy.config``, ``PriorZeroJerichoEnv.config``,
...); this file only sets the values that differ and derives the values that must agree between components
(action space, token length and vocabulary, env count, search size, LLM prompt settings). ``overrides`` are merged
strictly: an unknown key raises ``KeyError`` naming the nearest valid key, and setting a derived key to a value
that disagrees with its source raises ``ValueError`` saying where to set it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

from easydict import EasyDict

from lzero_ext.entry.schedule import TrainSchedule
from lzero_ext.orz.runtime import check_exp_config
from lzero_ext.policy.priorzero_policy import SHARED_LLM_KEYS, PriorZeroPolicy
from lzero_ext.policy.text_encoder import resolve_pretrained
from lzero_ext.utils.config import deep_merge, merge_strict
from lzero_ext.utils.config_types import check_value_types
from lzero_ext.worker import collection
from lzero_ext.worker.collector import PriorZeroCollector
from lzero_ext.worker.env_recovery import check_env_manager_config
from lzero_ext.worker.evaluator import PriorZeroEvaluator
from lzero_ext.worker.ray_collector import RayCollectionBackend
from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv, load_tokenizer, resolve_game_path
import zoo.jericho.priorzero.priors  # noqa: F401,E402 - registers the pretrained prior presets (priors/<name>/)

# ---------------------------------------------------------------- most frequently changed settings
GAME = os.environ.get("PRIORZERO_GAME", "default")  # our own game; or a path such as ../shared/jericho-games/zork1.z5
LLM_PATH = None  # None: the tiny default LLM built by the project; or a local HF dir (e.g. Qwen2.5-0.5B-Instruct)
SEED = 0


def create_config_for() -> EasyDict:
    """The DI-engine create_config: registry names plus the modules that register them."""
    return EasyDict(dict(
        env=dict(type='priorzero_jericho', import_names=['zoo.jericho.priorzero.envs.jericho_env']),
        env_manager=dict(type='base'),
        policy=dict(type='priorzero', import_names=['lzero_ext.policy.priorzero_policy']),
        collector=dict(type='priorzero', import_names=['lzero_ext.worker.collector']),
        evaluator=dict(type='priorzero', import_names=['lzero_ext.worker.evaluator']),
        replay_buffer=dict(type='game_buffer_priorzero', import_names=['lzero_ext.buffer.game_buffer']),
    ))


def default_main_config() -> EasyDict:
    """Every valid key of ``main_config`` with its default (the schema ``overrides`` are checked against)."""
    policy = PriorZeroPolicy.default_config()
    # `type` lives in create_config only: DI-engine's serial entry renames it to 'priorzero_command' there, and a
    # `type` in main_config would override that rename.
    policy = EasyDict({k: v for k, v in policy.items() if k not in ('cfg_type', 'type')})
    policy.learn.update_per_collect = 4  # (int) DI-engine serial pipeline: updates per collect
    policy.collect.collector = PriorZeroCollector.default_config()
    policy.eval.evaluator = PriorZeroEvaluator.default_config()
    return EasyDict(dict(
        exp_name='data_priorzero/priorzero',
        seed=SEED,
        env=PriorZeroJerichoEnv.default_config(),
        policy=policy,
        train=TrainSchedule.default_config(),
        collect=collection.default_config(),
    ))


# env.manager.step_timeout (int s, DI-engine's key): an env step that takes longer counts as hung; the env is restarted
# and its episode dropped (lzero_ext/worker/env_recovery.py). A healthy step is at most the valid-action timeout
# (env.valid_action_timeout_s, 15 s) plus the game's own step.
STEP_TIMEOUT_S = 60

# Sizes for a run that learns on our default game on a CPU in minutes, and grows to a GPU run by overrides.
_FULL = dict(
    env=dict(max_steps=50, action_space_size=64, max_valid_actions=20, max_seq_len=256, collector_env_num=4,
             evaluator_env_num=2, n_evaluator_episode=2, manager=dict(shared_memory=False, step_timeout=STEP_TIMEOUT_S)),
    policy=dict(
        device='auto',
        model=dict(embed_dim=256, num_layers=2, num_heads=8, num_unroll_steps=10, infer_context_length=4),
        mcts=dict(num_simulations=25),
        root_prior=dict(mode='adaptive'),
        llm=dict(prompt=dict(max_prompt_tokens=2048, history_turns=4), prior=dict(device='auto'),
                 trainer=dict(device='auto', lr=1e-5)),
        learn=dict(batch_size=64, llm_batch_size=16),
        collect=dict(collector=dict(n_steps=64, segment_length=20)),
        other=dict(replay_buffer=dict(num_unroll_steps=10, td_steps=5)),
    ),
    train=dict(max_iter=1000, wm_train_freq=1, llm_train_freq=5, wm_updates_per_iter=8, llm_updates_per_iter=1,
               eval_freq=20, save_freq=20),
)

# Observations (response + look + inventory) of our game run to 240 tokens; at 128 the inventory was cut off, so
# "holding the shovel" and "not holding it" read the same to the world model.
_DEBUG = dict(
    env=dict(max_steps=30, action_space_size=32, max_valid_actions=12, max_seq_len=256, collector_env_num=2,
             evaluator_env_num=2, n_evaluator_episode=4, manager=dict(shared_memory=False, step_timeout=STEP_TIMEOUT_S)),
    policy=dict(
        device='cpu',
        model=dict(embed_dim=64, num_layers=1, num_heads=2, group_size=8, num_unroll_steps=5,
                   infer_context_length=2, support_scale=20, encoder=dict(hidden_dim=64, num_layers=0, num_heads=2)),
        mcts=dict(num_simulations=16),
        root_prior=dict(mode='adaptive'),
        llm=dict(prompt=dict(max_prompt_tokens=1024, history_turns=1), prior=dict(device='cpu', micro_batch_states=8),
                 trainer=dict(device='cpu', lr=3e-4, micro_batch_size=8, lr_schedule='constant', kl_coef=0.01)),
        learn=dict(batch_size=16, llm_batch_size=8, wm=dict(learning_rate=1e-3)),
        collect=dict(collector=dict(n_steps=32, segment_length=12)),
        # Greedy evaluation (most visited action) can loop in a deterministic game; also report the sampled policy.
        eval=dict(evaluator=dict(extra_temperatures=[0.5])),
        other=dict(replay_buffer=dict(num_unroll_steps=5, td_steps=5)),
    ),
    train=dict(max_iter=120, wm_train_freq=1, llm_train_freq=1, wm_updates_per_iter=8, llm_updates_per_iter=1,
               eval_freq=10, save_freq=20),
)


def _derive(cfg: EasyDict, user: Mapping[str, Any]) -> EasyDict:
    """Fill the values that must agree between components; refuse user values that contradict them."""
    env, policy = cfg.env, cfg.policy
    if policy.model.encoder.pretrained is not None:  # a pretrained encoder reads its own tokenizer's ids
        _set_derived(cfg, user, ('env', 'tokenizer_path'), resolve_pretrained(policy.model.encoder.pretrained))
    tokenizer = load_tokenizer(env.tokenizer_path)
    buffer = policy.other.replay_buffer
    derived = {
        ('policy', 'model', 'vocab_size'): len(tokenizer),
        ('policy', 'model', 'pad_token_id'): int(tokenizer.pad_token_id or 0),
        ('policy', 'model', 'max_seq_len'): env.max_seq_len,
        ('policy', 'model', 'action_space_size'): env.action_space_size,
        ('policy', 'model', 'env_num'): max(env.collector_env_num, env.evaluator_env_num),
        ('policy', 'model', 'num_simulations'): policy.mcts.num_simulations,
        ('policy', 'model', 'num_unroll_steps'): buffer.num_unroll_steps,
        ('policy', 'model', 'device'): policy.device,
        ('policy', 'other', 'replay_buffer', 'action_space_size'): env.action_space_size,
        ('policy', 'other', 'replay_buffer', 'seed'): cfg.seed,
        ('policy', 'collect', 'seed'): cfg.seed,
        ('policy', 'collect', 'collector', 'pad_length'): buffer.num_unroll_steps + buffer.td_steps,
        # Every component that keeps a history keeps the prompt's turns (policy.llm.prompt is the one place to set
        # them): the collector and evaluator feed the prior, the buffer rebuilds the trainer's prompts.
        ('policy', 'collect', 'collector', 'history_length'): policy.llm.prompt.history_turns,
        ('policy', 'eval', 'evaluator', 'history_length'): policy.llm.prompt.history_turns,
        ('policy', 'other', 'replay_buffer', 'history_length'): policy.llm.prompt.history_turns,
        ('policy', 'eval', 'evaluator', 'n_episode'): env.n_evaluator_episode,
        ('policy', 'eval', 'evaluator', 'max_train_iter'): cfg.train.max_iter,
        ('policy', 'eval', 'evaluator', 'eval_freq'): cfg.train.eval_freq,
        ('policy', 'cuda'): policy.device.startswith('cuda') or policy.device == 'auto',
    }
    for key in SHARED_LLM_KEYS:  # the trainer must score prompts exactly as the prior does
        derived[('policy', 'llm', 'trainer', key)] = policy.llm.prior[key]
    for path, value in derived.items():
        _set_derived(cfg, user, path, value)
    # Learning-rate schedules span the run unless the user sets their length.
    wm_updates, llm_updates = TrainSchedule(cfg.train).total_updates()
    run_lengths = {
        ('policy', 'learn', 'wm', 'total_steps'): wm_updates,
        ('policy', 'llm', 'trainer', 'total_steps'): math.ceil(llm_updates / policy.llm.trainer.grad_accum),
    }
    for path, steps in run_lengths.items():
        if not _user_sets(user, path):
            _parent(cfg, path)[path[-1]] = max(1, steps)
    return cfg


def _parent(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path[:-1]:
        tree = tree.get(key, {}) if isinstance(tree, Mapping) else {}
    return tree


def _user_sets(user: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    parent = _parent(user, path)
    return isinstance(parent, Mapping) and path[-1] in parent


def _set_derived(cfg: EasyDict, user: Mapping[str, Any], path: tuple[str, ...], value: Any) -> None:
    leaf, given = path[-1], _parent(user, path)
    if _user_sets(user, path) and given[leaf] != value:
        raise ValueError(
            f"{'.'.join(path)}={given[leaf]!r} contradicts the value derived from the rest of the config "
            f"({value!r}); it is computed by get_priorzero_config, set its source instead (see _derive in "
            f"priorzero_config.py)"
        )
    _parent(cfg, path)[leaf] = value


def default_exp_name(env_id: str | None = None, seed: int = SEED, debug: bool = False) -> str:
    """``data_priorzero/<game>__priorzero[_debug]__seed<seed>``, the experiment directory when none is given."""
    game = GAME if env_id is None else env_id
    return f"data_priorzero/{resolve_game_path(game).stem}__priorzero{'_debug' if debug else ''}__seed{seed}"


def get_priorzero_config(
    env_id: str | None = None,
    seed: int = SEED,
    exp_name: str | None = None,
    llm_path: str | None = LLM_PATH,
    device: str | None = None,
    debug: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[EasyDict, EasyDict]:
    """Build ``(main_config, create_config)`` for game ``env_id`` (a story-file path, or None/'default')."""
    game = GAME if env_id is None else env_id
    preset = _DEBUG if debug else _FULL
    flags: dict[str, Any] = dict(seed=seed, env=dict(game_path=game))
    if llm_path is not None:
        flags['policy'] = dict(llm=dict(prior=dict(model_path=str(llm_path))))
    else:
        # The tiny default LLM starts from random weights: its summed log-probs mostly measure a candidate's length
        # (every token costs about log(vocab)), so it scores per token. A real LLM keeps the library default.
        flags['policy'] = dict(llm=dict(prompt=dict(score_rule='mean')))
    if device is not None:
        flags = deep_merge(flags, dict(policy=dict(device=device, llm=dict(prior=dict(device=device),
                                                                          trainer=dict(device=device)))))
    user = deep_merge(deep_merge(preset, flags), overrides or {})
    defaults = default_main_config()
    # Dicts passed through to another component are checked against what it accepts: DI-engine's env managers (as
    # env_recovery restarts them), the Ray backend's settings, ORZ's exp config (names open until ORZ is imported).
    validators = {'env.manager': check_env_manager_config, 'collect.ray': RayCollectionBackend.check_user_config,
                  'policy.llm.orz.exp': check_exp_config}
    cfg = merge_strict(defaults, user, where='main_config', validators=validators)
    check_value_types(defaults, user, where='main_config', open_keys=tuple(validators))
    cfg.exp_name = exp_name or default_exp_name(env_id, seed, debug)
    return _derive(cfg, user), create_config_for()


def get_priorzero_debug_config(env_id: str | None = None, seed: int = SEED, **kwargs: Any) -> tuple[EasyDict, EasyDict]:
    """The quick-test variant: tiny world model and search, a short schedule; minutes on a 2-core CPU."""
    return get_priorzero_config(env_id=env_id, seed=seed, debug=True, **kwargs)


# Module-level configs for `ding -m serial -c this_file.py` and for other zoos to import (debug sizes when
# DEBUG_MODE=True is set in the environment).
# The job's CLI is priorzero_orz_entry, which imports this module (this module imports nothing back).
main_config, create_config = get_priorzero_config(debug=os.environ.get("DEBUG_MODE", "").lower() in ("1", "true"))
