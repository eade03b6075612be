"""The async collection backend's protocol with stand-in learner, actor and collector (no envs, no models):
bounded staleness, weight hand-over, error propagation and shutdown."""
import threading
import time

import pytest

from lzero_ext.worker.acting_worker import LocalActingWorker
from lzero_ext.worker.collection import AsyncCollectionBackend, build_collection_backend
from lzero_ext.worker.collector import CollectStats


class FakeLearner:
    def __init__(self):
        self.weights_version = 0
        self.wm_version = 0
        self.llm_included = []

    def inference_state(self, include_llm=True):
        self.llm_included.append(include_llm)
        return dict(world_model={'w': self.wm_version}, llm={'l': self.weights_version} if include_llm else None,
                    weights_version=self.weights_version, wm_version=self.wm_version)


class FakeActor:
    def __init__(self):
        self.weights_version = self.wm_version = -1
        self.loaded = []
        self.act_stats = self

    def load_inference_state(self, state):
        self.loaded.append(state)
        self.weights_version, self.wm_version = state['weights_version'], state['wm_version']

    def pop_metrics(self):
        return {}


class FakeCollector:
    """Each collect returns one marker segment: (call index, acting world-model version)."""

    def __init__(self, actor, fail_at=None):
        self.actor, self.fail_at = actor, fail_at
        self.calls = 0
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    def collect(self, n_steps=None, train_iter=0):
        self.gate.wait()
        if self.calls == self.fail_at:
            raise OSError("env died")
        self.calls += 1
        self.last_stats = CollectStats(env_steps=4, seconds=0.01)
        return [(self.calls, self.actor.wm_version)]

    def close(self):
        self.closed = True


def _wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _backend(max_staleness=1, fail_at=None):
    learner, actor = FakeLearner(), FakeActor()
    collector = FakeCollector(actor, fail_at)
    backend = AsyncCollectionBackend(learner, LocalActingWorker(actor, collector),
                                     dict(backend='async', max_staleness=max_staleness))
    return backend, learner, actor, collector


@pytest.mark.parametrize("max_staleness", [1, 2])
def test_the_thread_runs_at_most_max_staleness_chunks_ahead(max_staleness):
    backend, learner, _, collector = _backend(max_staleness)
    try:
        assert backend.collect(train_iter=0) == [(1, 0)]
        _wait_for(lambda: collector.calls == 1 + max_staleness and len(backend._ready) == max_staleness)
        time.sleep(0.2)  # it stays blocked: no chunk beyond the bound
        assert collector.calls == 1 + max_staleness
        assert backend.envstep == 4 and backend.last_stats.metrics()['async/staleness'] == 0.0
    finally:
        backend.close()


def test_chunks_staler_than_the_bound_are_dropped_and_fresh_weights_are_used():
    backend, learner, actor, collector = _backend(max_staleness=1)
    try:
        backend.collect(train_iter=0)
        _wait_for(lambda: len(backend._ready) == 1)  # chunk 2 acted with publish 0
        for _ in range(3):  # three learner publishes without collecting (e.g. an LLM phase)
            learner.wm_version += 1
            learner.weights_version += 1
            backend.sync_weights()
        segments = backend.collect(train_iter=1)
        assert segments == [(3, 3)], "the stale chunk must be dropped; the next one acts with the newest weights"
        metrics = backend.last_stats.metrics()
        assert metrics['async/dropped_stale_chunks'] == 1.0
        assert metrics['async/staleness'] <= 1.0 and metrics['async/staleness_max'] <= 1.0
        assert actor.loaded[-1]['wm_version'] == 3 and actor.loaded[-1]['llm'] == {'l': 3}
        assert backend.envstep == 8, "dropped chunks' env steps are not counted"
    finally:
        backend.close()


def test_llm_weights_are_shipped_only_when_their_version_moved():
    backend, learner, _, _ = _backend()
    try:
        learner.wm_version += 1
        backend.sync_weights()  # world model changed, LLM did not
        learner.weights_version += 1
        backend.sync_weights()
        assert learner.llm_included == [True, False, True]
    finally:
        backend.close()


def test_a_failure_in_the_thread_is_raised_in_the_loop():
    backend, _, _, _ = _backend(fail_at=0)
    try:
        with pytest.raises(RuntimeError, match="async collector thread failed") as info:
            backend.collect(train_iter=0)
        assert isinstance(info.value.__cause__, OSError)
    finally:
        backend.close()


def test_close_stops_the_thread_and_closes_the_envs():
    backend, _, _, collector = _backend()
    backend.collect(train_iter=0)
    backend.close()
    assert not backend._thread.is_alive() and collector.closed


def test_invalid_settings_are_clear_errors():
    with pytest.raises(ValueError, match="max_staleness must be >= 1"):
        _backend(max_staleness=0)
    with pytest.raises(ValueError, match="collect.backend must be one of"):
        build_collection_backend(dict(collect=dict(backend='threads')), None, None, lambda: None)
    with pytest.raises(KeyError, match="max_staleness"):
        build_collection_backend(dict(collect=dict(max_stalenes=2)), None, None, lambda: None)
