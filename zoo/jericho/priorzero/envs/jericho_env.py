"""PriorZero's DI-engine env for Jericho text adventures (registered as ``priorzero_jericho``).

Differences from LightZero's ``jericho`` env that the rest of PriorZero relies on:

* the observation dict carries the raw text and the (cut) list of valid action strings, ``info`` carries the
  executed action string, so the LLM side can build prompts and targets;
* valid actions come from a killable child process with a timeout and a world-hash LRU cache, and work offline
  (rule-based object extraction, or a spaCy model when installed);
* games Jericho has no bindings for (our default game) get score, victory, world hash and valid actions from
  the generic Z-machine adapter;
* the config is strict: an unknown key fails with the nearest valid key.

The obs dict's ``action_indices[k]`` is the discrete action of ``valid_actions[k]`` (``action_index_mode``: a
stable hash of the command's text by default, see ``action_indices.py``; or the list position); an index that is
none of them executes ``fallback_action`` (logged at debug level). A ``str`` action is executed verbatim
(walkthroughs, experts).
Episode ends follow Gymnasium's convention in ``info``: ``terminated`` (victory or death: the last observation
has no future) or ``truncated`` (``max_steps`` reached in a live game: its future is cut, not absent; the value of
the last observation still counts). ``done`` is True for both, so DI-engine's env managers reset the env.
The emulator seed comes from the config (``seed``), not from DI-engine's ``seed()`` call: text games are
deterministic given that seed, and ``seed()`` only seeds :meth:`random_action`.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import gym
import numpy as np
from ding.envs import BaseEnv, BaseEnvTimestep
from ding.utils import ENV_REGISTRY
from easydict import EasyDict

from lzero_ext.buffer.game_segment import candidate_position
from lzero_ext.utils.config import merge_strict
from zoo.jericho.priorzero.envs.action_indices import ACTION_INDEX_MODES, assign_action_indices, max_candidates
from zoo.jericho.priorzero.envs.game_backend import (
    GameBackend, StoryInfo, clean_observation, inspect_story, open_game,
)
from zoo.jericho.priorzero.envs.valid_actions import EXTRACTOR_MODES, ValidActionGenerator

logger = logging.getLogger(__name__)

_tokenizers: dict[str, Any] = {}


def load_tokenizer(tokenizer_path: str | None) -> Any:
    """The HF tokenizer at ``tokenizer_path`` (None: the project's tiny default), loaded once per process."""
    if tokenizer_path is None:
        from lzero_ext.llm.default_model import ensure_default_model

        tokenizer_path = str(ensure_default_model())
    if tokenizer_path not in _tokenizers:
        if not Path(tokenizer_path).exists():
            raise FileNotFoundError(f"tokenizer_path does not exist: {tokenizer_path}")
        from transformers import AutoTokenizer

        _tokenizers[tokenizer_path] = AutoTokenizer.from_pretrained(tokenizer_path)
    return _tokenizers[tokenizer_path]


def resolve_game_path(game_path: str | None) -> Path:
    """None or 'default' -> our own game, *The Lighthouse*; anything else is a path."""
    if game_path is None or game_path == "default":
        from zoo.jericho.priorzero.games import DEFAULT_GAME_PATH

        return DEFAULT_GAME_PATH
    return Path(game_path).expanduser()


@ENV_REGISTRY.register("priorzero_jericho")
class PriorZeroJerichoEnv(BaseEnv):
    """A Jericho game as a DI-engine env with token-id observations and a discrete valid-action space."""

    config = dict(
        # (str|None) Z-machine story file; None or 'default' -> our own game (zoo/jericho/priorzero/games).
        game_path=None,
        # (str|None) adapter metadata for games Jericho has no bindings for; None -> '<story>.json' beside it.
        game_metadata_path=None,
        # (int) episode length limit in env steps (> 0); reaching it ends the episode as truncated, not terminated.
        max_steps=100,
        # (int) size of the discrete action space (the world model's action vocabulary).
        action_space_size=20,
        # (str) how a command gets its action index. 'text_hash': a stable hash of its text modulo action_space_size
        # (a collision inside one state moves the later command, in text order, to the next free index), so "take
        # lamp" has the same index in every state and what the world model learns about an index carries over
        # between states. 'list': index i is the i-th valid action in the game's order, which changes from state
        # to state (LightZero's Jericho env).
        action_index_mode="text_hash",
        # (int|None) most valid actions kept per state (the first ones in the game's order); None: action_space_size
        # for 'list', half of it for 'text_hash' (fewer commands, fewer collisions).
        max_valid_actions=None,
        # (int) token length of the world-model observation (padded/truncated on the right).
        max_seq_len=256,
        # (str|None) HF tokenizer directory; None -> the project's tiny default model (built and cached once).
        tokenizer_path=None,
        # (bool) compute valid actions at every state; False keeps only ``fallback_action`` (for scripted or
        # walkthrough play with string actions, and plain-step benchmarks), no worker process is started.
        generate_valid_actions=True,
        # (float) seconds a valid-action computation may take before its worker is killed and restarted.
        valid_action_timeout_s=15.0,
        # (int) LRU cache entries (world-state hash -> valid actions) per env; 0 disables the cache.
        valid_action_cache_size=10000,
        # (str) 'auto' (spaCy model if installed, else rules), 'rules' or 'spacy' (error if no model).
        object_extractor="auto",
        # (bool) append "Valid actions: a, b, ..." to the text that is tokenized for the world model.
        include_valid_actions_in_obs_text=False,
        # (bool) start the world model's text with "Score: N" (the game's status line). Without it, a state after
        # an award was collected and undone (take lamp, drop lamp) reads exactly like the state before it, so the
        # reward and value heads see one text with two outcomes.
        score_in_obs_text=False,
        # (bool) add the responses to `look` and `inventory` (run on a saved copy of the game state, then restored)
        # to the observation text, as DRRN/KG-A2C-style agents do: a response such as "Taken." alone says
        # neither where the player is nor what it carries, so without them different states look identical.
        look_and_inventory=True,
        # (int|None) emulator RNG seed; None -> the walkthrough's seed when Jericho knows the game, else 0.
        # Jericho treats 0 like None for the games it knows.
        seed=None,
        # (str) command executed for an action index past the valid list, and the list used when it is empty.
        fallback_action="look",
        # DI-engine pipeline keys, accepted here and not used by the env itself:
        type="priorzero_jericho",  # (str) registry name
        import_names=["zoo.jericho.priorzero.envs.jericho_env"],  # (list[str]) modules to import
        cfg_type=None,  # (str|None) set by DI-engine's compile_config
        manager=None,  # (dict|None) DI-engine env-manager settings (keys: env_recovery.env_manager_schema)
        collector_env_num=1,  # (int) popped by create_collector_env_cfg
        evaluator_env_num=1,  # (int) popped by create_evaluator_env_cfg
        n_evaluator_episode=1,  # (int) evaluator episodes
        stop_value=None,  # (float|None) evaluator stop value
        env_id=None,  # (str|None) label used by LightZero for logging
        is_collect=None,  # (bool|None) set by the env-cfg creators
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    @classmethod
    def describe(cls, cfg: dict) -> str:
        """The game's story file, for the trainer's start-up line (``lzero_ext.entry.hybrid_loop.env_label``)."""
        return resolve_game_path(cfg.get("game_path")).name

    def __init__(self, cfg: dict | None = None) -> None:
        self._cfg = merge_strict(self.default_config(), dict(cfg or {}), where="env")
        self._validate_config()
        self._story: StoryInfo = inspect_story(resolve_game_path(self._cfg.game_path),
                                               self._cfg.game_metadata_path)
        self._backend: GameBackend | None = None
        self._valid_action_generator: ValidActionGenerator | None = None
        self._tokenizer: Any = None
        self._rng = np.random.default_rng(0)
        self._timestep = 0
        self._score = 0
        self._episode_return = 0.0
        self._raw_obs_text = ""
        self._valid_actions: list[str] = [self._cfg.fallback_action]
        self._action_indices = assign_action_indices(self._valid_actions, self._cfg.action_space_size,
                                                     self._cfg.action_index_mode)
        self._valid_actions_source = "fallback"
        self._num_valid_actions_total = 0
        self._episode_done = False

    def _validate_config(self) -> None:
        cfg = self._cfg
        for key in ("max_steps", "action_space_size", "max_seq_len"):
            if not isinstance(cfg[key], (int, np.integer)) or isinstance(cfg[key], bool) or cfg[key] <= 0:
                raise ValueError(f"env.{key} must be a positive int, got {cfg[key]!r}")
        if not cfg.valid_action_timeout_s > 0:
            raise ValueError(f"env.valid_action_timeout_s must be > 0, got {cfg.valid_action_timeout_s!r}")
        if cfg.valid_action_cache_size < 0:
            raise ValueError(f"env.valid_action_cache_size must be >= 0, got {cfg.valid_action_cache_size!r}")
        if cfg.object_extractor not in EXTRACTOR_MODES:
            raise ValueError(f"env.object_extractor must be one of {EXTRACTOR_MODES}, got {cfg.object_extractor!r}")
        if cfg.action_index_mode not in ACTION_INDEX_MODES:
            raise ValueError(f"env.action_index_mode must be one of {ACTION_INDEX_MODES}, "
                             f"got {cfg.action_index_mode!r}")
        if cfg.max_valid_actions is not None and not 0 < cfg.max_valid_actions <= cfg.action_space_size:
            raise ValueError(f"env.max_valid_actions must be None or in [1, action_space_size="
                             f"{cfg.action_space_size}], got {cfg.max_valid_actions!r}")
        if not isinstance(cfg.fallback_action, str) or not cfg.fallback_action.strip():
            raise ValueError(f"env.fallback_action must be a non-empty command, got {cfg.fallback_action!r}")

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        """Heavy parts are opened at the first reset, so the env object stays cheap to pickle for env managers."""
        self._backend = open_game(self._story, self._cfg.seed)
        self._valid_action_generator = ValidActionGenerator(
            self._story, self._cfg.seed, self._cfg.valid_action_timeout_s, self._cfg.valid_action_cache_size,
            self._cfg.object_extractor,
        )
        self._tokenizer = load_tokenizer(self._cfg.tokenizer_path)
        logger.info("Opened %s with %s", self._story.path.name,
                    "Jericho bindings" if self._story.jericho_supported else "the generic Z-machine adapter")

    def reset(self) -> dict:
        if self._backend is None:
            self._open()
        self._raw_obs_text = self._observation_text(self._backend.reset(), done=False)
        self._timestep = 0
        self._score = self._backend.score()
        self._episode_return = 0.0
        self._episode_done = False
        self._refresh_valid_actions(done=False)
        return self._make_obs()

    def close(self) -> None:
        if self._valid_action_generator is not None:
            self._valid_action_generator.close()
            self._valid_action_generator = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        """Seeds :meth:`random_action` only; the emulator seed is the config's ``seed`` (see module doc)."""
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ stepping
    def step(self, action: int | np.integer | np.ndarray | str) -> BaseEnvTimestep:
        if self._backend is None:
            raise RuntimeError("PriorZeroJerichoEnv.step() called before reset().")
        if self._episode_done:
            raise RuntimeError("PriorZeroJerichoEnv.step() called after the episode ended; call reset().")
        action_text = self._action_text(action)
        raw_text = self._backend.step(action_text)
        self._timestep += 1
        new_score = self._backend.score()
        reward = float(new_score - self._score)
        self._score = new_score
        self._episode_return += reward
        victory = self._backend.victory()
        terminated = victory or self._backend.game_over()
        truncated = not terminated and self._timestep >= self._cfg.max_steps
        done = terminated or truncated
        # A truncated episode's last observation is an ordinary state (the learner bootstraps from its value), so
        # it is rendered like any other: look/inventory and valid actions included.
        self._raw_obs_text = self._observation_text(raw_text, terminated)
        self._episode_done = done
        self._refresh_valid_actions(done=terminated)
        info = self._info(action_text, victory)
        info["terminated"], info["truncated"] = terminated, truncated
        if done:
            info["eval_episode_return"] = self._episode_return
        return BaseEnvTimestep(self._make_obs(), np.array([reward], dtype=np.float32), done, info)

    def _action_text(self, action: int | np.integer | np.ndarray | str) -> str:
        if isinstance(action, str):
            return action
        index = int(np.asarray(action).reshape(-1)[0])
        position = candidate_position(self._action_indices, index)
        if position is not None:
            return self._valid_actions[position]
        logger.debug("Action index %d is none of the %d valid actions; executing %r.", index,
                     len(self._valid_actions), self._cfg.fallback_action)
        return self._cfg.fallback_action

    def _refresh_valid_actions(self, done: bool) -> None:
        if done:
            actions, self._valid_actions_source = [], "episode_end"
        elif not self._cfg.generate_valid_actions:
            actions, self._valid_actions_source = [], "disabled"
        else:
            result = self._valid_action_generator.get(self._backend.get_state(), self._backend.state_key())
            actions, self._valid_actions_source = result.actions, result.source
        unique = list(dict.fromkeys(a.strip() for a in actions if a and a.strip()))
        self._num_valid_actions_total = len(unique)
        cfg = self._cfg
        keep = max_candidates(cfg.action_space_size, cfg.action_index_mode, cfg.max_valid_actions)
        self._valid_actions = unique[:keep] or [cfg.fallback_action]
        self._action_indices = assign_action_indices(self._valid_actions, cfg.action_space_size, cfg.action_index_mode)

    # ------------------------------------------------------------------ observations
    def _observation_text(self, response: str, done: bool) -> str:
        """The game's response, plus (if configured and the episode goes on) the location and inventory."""
        text = clean_observation(response)
        if not self._cfg.look_and_inventory or done:
            return text
        state = self._backend.get_state()
        look = clean_observation(self._backend.step("look"))
        inventory = clean_observation(self._backend.step("inventory"))
        self._backend.set_state(state)
        return f"{text}\n\n{look}\n\n{inventory}"

    def _obs_text(self) -> str:
        text = self._raw_obs_text
        if self._cfg.score_in_obs_text:
            text = f"Score: {self._score:g}\n{text}"
        if self._cfg.include_valid_actions_in_obs_text:
            text = f"{text}\nValid actions: {', '.join(self._valid_actions)}"
        return text

    def _make_obs(self) -> dict:
        length = self._cfg.max_seq_len
        token_ids = self._tokenizer(self._obs_text(), truncation=True, max_length=length)["input_ids"]
        pad_id = self._tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (self._tokenizer.eos_token_id or 0)
        observation = np.full(length, pad_id, dtype=np.int64)
        observation[: len(token_ids)] = token_ids
        attention_mask = np.zeros(length, dtype=np.int64)
        attention_mask[: len(token_ids)] = 1
        action_mask = np.zeros(self._cfg.action_space_size, dtype=np.int8)
        action_mask[self._action_indices] = 1
        return {
            "observation": observation,
            "attention_mask": attention_mask,
            "action_mask": action_mask,
            "to_play": -1,
            "timestep": self._timestep,
            "raw_obs_text": self._raw_obs_text,
            "valid_actions": list(self._valid_actions),
            "action_indices": self._action_indices.copy(),
            "score": float(self._score),
        }

    def _info(self, executed_action: str, victory: bool) -> dict:
        return {
            "score": float(self._score),
            "max_score": float(self._backend.max_score),
            "victory": bool(victory),
            "moves": int(self._backend.moves()),
            "raw_obs_text": self._raw_obs_text,
            "valid_actions": list(self._valid_actions),
            "num_valid_actions_total": self._num_valid_actions_total,
            "valid_actions_source": self._valid_actions_source,
            "executed_action": executed_action,
        }

    # ------------------------------------------------------------------ DI-engine extras
    def random_action(self) -> np.ndarray:
        return np.array([self._rng.choice(self._action_indices)], dtype=np.int64)

    @property
    def valid_action_generator(self) -> ValidActionGenerator | None:
        """The generator (stats, test hooks); None before the first reset."""
        return self._valid_action_generator

    @property
    def story(self) -> StoryInfo:
        return self._story

    @property
    def observation_space(self) -> gym.spaces.Dict:
        vocab = len(self._tokenizer) if self._tokenizer is not None else np.iinfo(np.int32).max
        length, actions = self._cfg.max_seq_len, self._cfg.action_space_size
        return gym.spaces.Dict({
            "observation": gym.spaces.Box(0, vocab, (length,), np.int64),
            "attention_mask": gym.spaces.Box(0, 1, (length,), np.int64),
            "action_mask": gym.spaces.Box(0, 1, (actions,), np.int8),
        })

    @property
    def action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(self._cfg.action_space_size)

    @property
    def reward_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(1,), dtype=np.float32)

    def __repr__(self) -> str:
        backend = "jericho" if self._story.jericho_supported else "zmachine-adapter"
        return (f"PriorZeroJerichoEnv(game={self._story.path.name}, backend={backend}, "
                f"max_steps={self._cfg.max_steps}, action_space_size={self._cfg.action_space_size})")

    __str__ = __repr__  # gym.Env defines its own __str__

    @staticmethod
    def create_collector_env_cfg(cfg: dict) -> list[dict]:
        cfg = copy.deepcopy(cfg)
        count = cfg.pop("collector_env_num", 1)
        cfg["is_collect"] = True
        return [copy.deepcopy(cfg) for _ in range(count)]

    @staticmethod
    def create_evaluator_env_cfg(cfg: dict) -> list[dict]:
        cfg = copy.deepcopy(cfg)
        count = cfg.pop("evaluator_env_num", 1)
        cfg["is_collect"] = False
        return [copy.deepcopy(cfg) for _ in range(count)]
