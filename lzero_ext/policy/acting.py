"""What one acting step produces, apart from the policy that runs it: the records the collector stores and logs,
the acting counters, and how a search (or, for ``llm_only``, the prior alone) becomes a stored decision.

:meth:`lzero_ext.policy.priorzero_policy.PriorZeroPolicy.act` does the work (prior call, search, action choice);
this module holds the plain data and the pure step from its results to a :class:`StepDecision`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lzero_ext.buffer.game_segment import StepDecision, StepObservation
from lzero_ext.llm.prior import PriorCallStats
from lzero_ext.mcts.search import SearchOutput


@dataclass
class ActOutput:
    """One env's decision plus search statistics (what the collector stores and logs)."""

    decision: StepDecision
    predicted_value: float
    llm_weight: float  # weight the LLM got in the root prior (0 in wm mode)


@dataclass
class ActStats:
    """Throughput counters of acting, read and reset by the training loop once per iteration."""

    searches: int = 0
    simulations: int = 0
    search_seconds: float = 0.0
    tree_seconds: float = 0.0
    prior: PriorCallStats | None = None  # the prior's own counters (states/s, per call, prompt tokens, model time)

    def pop_metrics(self) -> dict[str, float]:
        metrics = {}
        if self.simulations:
            metrics['perf/mcts_simulations_per_s'] = self.simulations / max(self.search_seconds, 1e-9)
            metrics['perf/mcts_tree_fraction'] = self.tree_seconds / max(self.search_seconds, 1e-9)
        if self.prior is not None:
            metrics.update(self.prior.pop_metrics())
        self.__init__(prior=self.prior)
        return metrics


@dataclass
class SearchResult:
    """A batched search's output and the weight the LLM got in each root prior."""

    output: SearchOutput
    llm_weight: np.ndarray  # [B]


def act_output(row: int, action: int, obs: StepObservation, llm_logprobs: np.ndarray, version: int,
               search: SearchResult | None, num_actions: int) -> ActOutput:
    """Env ``row``'s decision: the visit distribution (or, without a search, the prior over the candidates' action
    indices), values, and the prior's log-prob of the executed candidate (the PPO ratio's old policy)."""
    if search is None:  # llm_only: the prior itself is the policy target
        visits = np.zeros(num_actions, dtype=np.float32)
        visits[obs.action_indices[:len(llm_logprobs)]] = np.exp(llm_logprobs)
        root_value = predicted = float('nan')
        llm_weight = 1.0
    else:
        visits = search.output.visit_distribution[row]
        root_value = float(search.output.root_value[row])
        predicted = float(search.output.predicted_value[row])
        llm_weight = float(search.llm_weight[row])
    position = obs.candidate_position(action)
    old_prior = float(llm_logprobs[position]) if position is not None and len(llm_logprobs) else float('nan')
    decision = StepDecision(
        action=action,
        executed_action=obs.valid_actions[position] if position is not None else '',
        visit_distribution=np.asarray(visits, dtype=np.float32),
        root_value=root_value,
        prior_logprobs=llm_logprobs if len(llm_logprobs) else None,
        prior_version=version,
        old_prior_logprob=old_prior,
    )
    return ActOutput(decision=decision, predicted_value=predicted, llm_weight=llm_weight)
