"""policy.acting.act_output: how a search's output, or the prior alone (llm_only), becomes the stored decision."""
from __future__ import annotations

import math

import numpy as np

from lzero_ext.buffer.game_segment import StepObservation
from lzero_ext.mcts.search import SearchOutput
from lzero_ext.policy.acting import SearchResult, act_output

ACTIONS = 6


def _obs() -> StepObservation:
    tokens = np.array([5, 6, 0], dtype=np.int64)
    mask = np.zeros(ACTIONS, np.int8)
    mask[[4, 1]] = 1
    return StepObservation(tokens, (tokens != 0).astype(np.int64), mask, "a room", ["north", "south"], 0,
                           action_indices=np.array([4, 1]))


def test_llm_only_stores_the_prior_at_the_candidates_action_indices():
    logprobs = np.log(np.array([0.25, 0.75], dtype=np.float32))
    out = act_output(0, 1, _obs(), logprobs, version=3, search=None, num_actions=ACTIONS)
    expected = np.zeros(ACTIONS, np.float32)
    expected[[4, 1]] = [0.25, 0.75]
    np.testing.assert_allclose(out.decision.visit_distribution, expected, rtol=1e-6)
    assert out.decision.executed_action == "south" and out.decision.prior_version == 3
    assert math.isclose(out.decision.old_prior_logprob, math.log(0.75), rel_tol=1e-6)
    assert out.llm_weight == 1.0 and math.isnan(out.predicted_value)


def test_search_row_gives_visits_values_and_llm_weight():
    visits = np.zeros((2, ACTIONS), np.float32)
    visits[1, 4] = 1.0
    output = SearchOutput(visit_counts=visits * 10, visit_distribution=visits, root_value=np.array([0.0, 2.5]),
                          predicted_value=np.array([0.0, 1.5]), root_prior=visits)
    search = SearchResult(output=output, llm_weight=np.array([0.1, 0.4]))
    out = act_output(1, 4, _obs(), np.zeros(0, np.float32), version=-1, search=search, num_actions=ACTIONS)
    assert out.decision.executed_action == "north" and out.decision.root_value == 2.5
    assert out.predicted_value == 1.5 and math.isclose(out.llm_weight, 0.4)
    assert out.decision.prior_logprobs is None and math.isnan(out.decision.old_prior_logprob)
