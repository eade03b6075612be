"""The buffer fed by the real Jericho env: text, action indices and action strings stay aligned."""
import numpy as np
import pytest

from lzero_ext.buffer.game_buffer import PriorZeroGameBuffer
from lzero_ext.buffer.game_segment import SegmentBuilder, StepDecision, StepObservation

jericho_env = pytest.importorskip("zoo.jericho.priorzero.envs.jericho_env")

ACTIONS, STEPS = 8, 14


def test_env_episode_windows_keep_text_and_actions_aligned():
    env = jericho_env.PriorZeroJerichoEnv(dict(max_steps=STEPS, action_space_size=ACTIONS, max_seq_len=64))
    try:
        obs = env.reset()
        builder = SegmentBuilder(ACTIONS, segment_length=5, pad_length=4, history_length=2)
        segments = builder.reset(StepObservation.from_env_obs(obs))
        rng = np.random.default_rng(0)
        chosen_strings, done = [], False
        while not done:
            action = int(rng.choice(np.flatnonzero(obs['action_mask'])))
            chosen_strings.append(obs['valid_actions'][list(obs['action_indices']).index(action)])
            visits = np.zeros(ACTIONS)
            visits[action] = 3.0
            timestep = env.step(action)
            done = timestep.done
            decision = StepDecision(action, timestep.info['executed_action'], visits, 0.0, np.zeros(len(
                obs['valid_actions'])), 1, 0.0)
            segments += builder.append(decision, timestep.reward, StepObservation.from_env_obs(timestep.obs), done)
            obs = timestep.obs
    finally:
        env.close()
    buffer = PriorZeroGameBuffer(dict(action_space_size=ACTIONS, num_unroll_steps=4, td_steps=1))
    buffer.push_game_segments(segments)
    assert buffer.get_num_of_transitions() == len(chosen_strings)
    batch = buffer.sample_world_model_batch(buffer.get_num_of_transitions())
    for b in range(batch.batch_size):
        for j in np.flatnonzero(batch.mask_padding[b]):
            step = int(batch.timesteps[b, j])
            assert batch.executed_actions[b][j] == chosen_strings[step]
            assert batch.target_policies[b, j, batch.actions[b, j]] == 1.0
    for sample in buffer.sample_llm_batch(6):
        assert sample.candidates[sample.action_index] in chosen_strings
        assert sample.visit_distribution[sample.action_index] == 1.0
