"""The config's max-iteration bound under DI-engine's serial pipeline: the evaluator forces an evaluation at
``max_train_iter`` and reports ``stop`` there, which ends ``serial_pipeline``'s loop."""
from ding.envs import BaseEnvManager

from lzero_ext.worker.evaluator import PriorZeroEvaluator


class _GreedyFirstAction:
    """A stand-in eval_mode policy: always the first valid action (the evaluator's bookkeeping is under test)."""

    def forward(self, obs, histories, eval_mode):
        from lzero_ext.buffer.game_segment import StepDecision

        class _Out:
            def __init__(self, text):
                self.decision = StepDecision(action=0, executed_action=text, visit_distribution=None, root_value=0.0)

        return {e: _Out(o["valid_actions"][0]) for e, o in obs.items()}

    def reset(self, env_ids):
        pass


def test_evaluator_forces_eval_and_stop_at_max_train_iter():
    from functools import partial

    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    env = BaseEnvManager([partial(PriorZeroJerichoEnv, cfg=dict(max_steps=3))], BaseEnvManager.default_config())
    evaluator = PriorZeroEvaluator(dict(eval_freq=100, n_episode=1, max_train_iter=5), env, _GreedyFirstAction())
    try:
        assert evaluator.should_eval(0)
        stop, info = evaluator.eval(train_iter=0)
        assert not stop and info["evals/episode_length_mean"] == 3
        assert not evaluator.should_eval(3)
        assert evaluator.should_eval(5)
        stop, _ = evaluator.eval(train_iter=5)
        assert stop
    finally:
        evaluator.close()
