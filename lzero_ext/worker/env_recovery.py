"""Stepping a DI-engine env manager so that one failed env is restarted instead of ending the run.

DI-engine 0.5.3's managers treat an env fault as fatal: ``BaseEnvManager.step`` raises on the first env that raises
(and the timesteps of the envs already stepped in that call are lost), and ``SyncSubprocessEnvManager.step`` closes
*every* env when one worker sends back an exception, blocks forever on a hung worker and raises ``EOFError`` on a
dead one. A research run lasts days, so :func:`step_envs` steps the envs itself and reports per env:

* **crash in the env** (an exception from the game): caught per env, in either manager.
* **dead worker** (subprocess manager: the process exited, e.g. ``os._exit`` or the OOM killer): its pipe reports
  EOF / a broken connection.
* **hang**: detected by ``step_timeout`` seconds (DI-engine's own ``env.manager.step_timeout`` key). In the
  subprocess manager the parent waits on the worker's pipe with that deadline, so any hang is caught, even inside
  the game's C code. In the base manager the env runs in this process, so DI-engine's SIGALRM watchdog
  (``BaseEnvManager._step`` with ``step_timeout``) is the only tool: it interrupts Python code and blocking system
  calls, not a loop inside C code, and only on the main thread (a collector thread of the async backend gets no
  timeout there); use the subprocess manager where that matters.

A failed env is **restarted**: the subprocess is terminated (killed if it ignores SIGTERM) and a new one is created,
or the in-process env object is closed and rebuilt from its factory; then DI-engine's ``_reset(env_id)`` starts a
new episode, so ``ready_obs`` holds that env's fresh first observation. The caller gets the failure and decides what
happens to the episode (the collector and evaluator drop it). A restarted env that cannot even reset is fatal
(DI-engine's ``_reset`` closes the manager and raises after ``max_retry`` tries). A killed worker's own children
(the valid-action process) see their pipe close and exit. Only documented private attributes of the two
DI-engine 0.5.3 managers are used (``_envs``, ``_env_fn``, ``_pipe_parents``, ``_subprocesses``,
``_create_env_subprocess``, ``_reset``, ``_env_states``, ``_ready_obs``).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ding.envs import BaseEnvTimestep
from ding.envs.env_manager.base_env_manager import EnvState
from ding.envs.env_manager.subprocess_env_manager import AsyncSubprocessEnvManager, is_abnormal_timestep

from lzero_ext.utils.config import schema_validator

logger = logging.getLogger(__name__)

# env.manager.type values step_envs is built and tested for (the two DI-engine 0.5.3 managers named above); the v2,
# env-pool and gym-vector managers step differently and have no restart path here.
ENV_MANAGER_TYPES: tuple[str, ...] = ('base', 'subprocess')


def env_manager_schema() -> dict[str, Any]:
    """Every key ``env.manager`` may set, with DI-engine's defaults: the base manager's keys plus the subprocess
    manager's own, and ``type``. The base manager ignores the subprocess-only keys (``shared_memory``, ...), so one
    config may set them for either manager."""
    from ding.envs.env_manager.base_env_manager import BaseEnvManager
    from ding.envs.env_manager.subprocess_env_manager import SyncSubprocessEnvManager

    return {**BaseEnvManager.config, **SyncSubprocessEnvManager.config, 'type': 'base'}


def check_env_manager_config(value: Any, where: str = 'env.manager') -> None:
    """Validator of ``env.manager`` (``None`` or a dict): keys and value types of :func:`env_manager_schema`,
    ``type`` one of :data:`ENV_MANAGER_TYPES`."""
    schema_validator(env_manager_schema())(value, where)
    manager_type = (value or {}).get('type')
    if manager_type is not None and manager_type not in ENV_MANAGER_TYPES:
        raise ValueError(f"{where}.type must be one of {ENV_MANAGER_TYPES} (the managers worker/env_recovery.py "
                         f"restarts failed envs in), got {manager_type!r}")


def manager_step_timeout(manager: Any) -> float | None:
    """The manager's configured ``step_timeout`` (``env.manager.step_timeout``), or None."""
    return getattr(manager, '_step_timeout', None)


def step_envs(manager: Any, actions: dict[int, Any]) -> tuple[dict[int, BaseEnvTimestep], dict[int, str]]:
    """Step ``actions`` on ``manager``; return ``(timesteps of the envs that stepped, {env_id: error})``.

    Every env in the error dict has been restarted and holds a new episode's first observation in ``ready_obs``.
    """
    if isinstance(manager, AsyncSubprocessEnvManager):
        return _step_subprocess(manager, actions)
    return _step_in_process(manager, actions)


# ---------------------------------------------------------------- base (in-process) manager
def _step_in_process(manager: Any, actions: dict[int, Any]) -> tuple[dict[int, BaseEnvTimestep], dict[int, str]]:
    """One env per ``manager.step`` call, so a raising env does not lose the other envs' timesteps."""
    timesteps: dict[int, BaseEnvTimestep] = {}
    failures: dict[int, str] = {}
    timeout = manager_step_timeout(manager)
    for env_id, action in actions.items():
        tic = time.monotonic()
        try:
            timesteps.update(manager.step({env_id: action}))
        except Exception as exc:  # noqa: BLE001 - any env fault is handled the same way: restart, report
            if getattr(manager, '_closed', False):
                raise  # the manager shut itself down (e.g. a reset after `done` failed): nothing to restart
            failures[env_id] = _describe(exc)
            if timeout is not None and time.monotonic() - tic >= timeout:
                # DI-engine wraps the watchdog's TimeoutError into a RuntimeError that no longer names it.
                failures[env_id] = f"step did not return within step_timeout={timeout} s (hung env); {_describe(exc)}"
            _restart_in_process(manager, env_id)
    return timesteps, failures


def _restart_in_process(manager: Any, env_id: int) -> None:
    try:
        manager._envs[env_id].close()
    except Exception as exc:  # noqa: BLE001 - a broken env may fail to close; the new one replaces it anyway
        logger.debug("closing failed env %d raised %s", env_id, _describe(exc))
    manager._envs[env_id] = manager._env_fn[env_id]()
    manager._reset(env_id)


# ---------------------------------------------------------------- subprocess manager
def _step_subprocess(manager: AsyncSubprocessEnvManager,
                     actions: dict[int, Any]) -> tuple[dict[int, BaseEnvTimestep], dict[int, str]]:
    """DI-engine's synchronous step with a parent-side deadline and per-env fault isolation."""
    manager._check_closed()
    timeout = manager_step_timeout(manager)
    failures: dict[int, str] = {}
    sent: list[int] = []
    for env_id, action in actions.items():
        try:
            manager._pipe_parents[env_id].send(['step', [action], None])
            sent.append(env_id)
        except (OSError, EOFError, ValueError) as exc:  # the worker is already gone
            failures[env_id] = f"worker unreachable: {_describe(exc)}"
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    replies: dict[int, Any] = {}
    for env_id in sent:
        pipe = manager._pipe_parents[env_id]
        try:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait is not None and not pipe.poll(wait):
                failures[env_id] = f"step did not return within step_timeout={timeout} s (hung worker)"
                continue
            reply = pipe.recv()
        except (EOFError, OSError) as exc:
            failures[env_id] = f"worker process died ({_describe(exc)}, exit code " \
                               f"{manager._subprocesses[env_id].exitcode})"
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable reply
            failures[env_id] = f"unreadable reply: {_describe(exc)}"
            continue
        if isinstance(reply, BaseException):
            failures[env_id] = f"env raised: {_describe(reply)}"
        elif is_abnormal_timestep(reply):
            failures[env_id] = "env returned an abnormal timestep"
        else:
            replies[env_id] = reply
    for env_id in failures:
        _restart_subprocess(manager, env_id)
    timesteps: dict[int, BaseEnvTimestep] = {}
    for env_id, timestep in replies.items():
        if manager._shared_memory:
            timestep = timestep._replace(obs=manager._obs_buffers[env_id].get())
        timesteps[env_id] = timestep
        if timestep.done:
            manager._env_episode_count[env_id] += 1
            if manager._env_episode_count[env_id] >= manager._episode_num:
                manager._env_states[env_id] = EnvState.DONE
            elif manager._auto_reset:
                manager._reset(env_id)  # synchronous: episodes end rarely, and ready_obs must be complete
            else:
                manager._env_states[env_id] = EnvState.NEED_RESET
        else:
            manager._ready_obs[env_id] = timestep.obs
    return timesteps, failures


def _restart_subprocess(manager: AsyncSubprocessEnvManager, env_id: int) -> None:
    """Terminate (then kill) the worker, start a new one and reset it."""
    process = manager._subprocesses[env_id]
    try:
        manager._pipe_parents[env_id].close()
    except OSError:
        pass
    if process.is_alive():
        process.terminate()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    manager._create_env_subprocess(env_id)
    manager._reset(env_id)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(': ')
