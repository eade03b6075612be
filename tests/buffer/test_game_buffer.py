import pickle

import numpy as np
import pytest
from ding.utils import BUFFER_REGISTRY

from lzero_ext.buffer.game_buffer import PriorZeroGameBuffer, n_step_value_targets
from lzero_ext.buffer.game_segment import PriorZeroGameSegment, SegmentBuilder
from tests.buffer.helpers import ACTIONS, action_of, decision, observation, play_episode, reward_of

UNROLL, TD, GAMMA = 4, 3, 0.9


def make_buffer(**overrides) -> PriorZeroGameBuffer:
    cfg = dict(action_space_size=ACTIONS, num_unroll_steps=UNROLL, td_steps=TD, discount_factor=GAMMA,
               history_length=3, seed=1)
    cfg.update(overrides)
    return PriorZeroGameBuffer(cfg)


def filled_buffer(num_steps: int = 30, **overrides) -> PriorZeroGameBuffer:
    buffer = make_buffer(**overrides)
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=UNROLL + TD, history_length=3)
    buffer.push_game_segments(play_episode(builder, num_steps))
    return buffer


def test_registered_under_its_name():
    assert BUFFER_REGISTRY.get('game_buffer_priorzero') is PriorZeroGameBuffer


def test_unknown_config_key_names_the_nearest_valid_one():
    with pytest.raises(KeyError, match="td_steps"):
        PriorZeroGameBuffer(dict(td_step=3))


def test_windows_stay_aligned_across_segment_boundaries():
    buffer = filled_buffer(num_steps=30)
    assert buffer.get_num_of_transitions() == 30
    batch = buffer.sample_world_model_batch(30)  # without replacement: every start position once
    assert sorted((batch.timesteps[:, 0]).tolist()) == list(range(30))
    crossing = 0
    for b in range(batch.batch_size):
        start = int(batch.timesteps[b, 0])
        crossing += start % 8 + UNROLL > 8
        for j in range(UNROLL):
            step = start + j
            if step >= 30:
                assert not batch.mask_padding[b, j]
                continue
            assert batch.mask_padding[b, j]
            assert batch.observation_texts[b][j] == f"ep0 obs {step}"
            assert batch.observations[b, j, 1] == step + 1
            assert batch.actions[b, j] == action_of(step)
            assert batch.executed_actions[b][j] == f"ep0 s{step} act{action_of(step)}"
            assert int(np.argmax(batch.target_policies[b, j])) == action_of(step)
            assert batch.rewards[b, j] == reward_of(step)
        last = min(start + UNROLL, 30)
        assert batch.observation_texts[b][UNROLL] == f"ep0 obs {last}"
    assert crossing > 0, "the sample should contain windows that cross a segment boundary"
    assert batch.observations.shape == (30, UNROLL + 1, 12)
    assert batch.target_policies.shape == (30, UNROLL, ACTIONS)


def test_batch_larger_than_buffer_samples_with_replacement():
    buffer = filled_buffer(num_steps=3)
    batch = buffer.sample_world_model_batch(8)
    assert batch.batch_size == 8
    assert set(batch.timesteps[:, 0].tolist()) <= {0, 1, 2}
    assert len(buffer.sample_llm_batch(8)) == 8


def test_empty_buffer_raises():
    with pytest.raises(ValueError, match="empty"):
        make_buffer().sample_world_model_batch(4)


def hand_target(rewards, values, t, n, ends, td=TD, gamma=GAMMA):
    """Independent n-step return: values[b] is V(o_b); o_n is terminal when ends."""
    b = min(t + td, n if ends else n - 1)
    bootstrap = 0.0 if b >= n else values[b]
    return sum(gamma ** i * rewards[t + i] for i in range(b - t)) + gamma ** (b - t) * bootstrap


@pytest.mark.parametrize("ends", [True, False])
def test_n_step_targets_from_root_values(ends):
    segment = PriorZeroGameSegment(ACTIONS, segment_length=6, pad_length=0)
    segment.reset(observation(0))
    for step in range(6):
        segment.append(decision(step), reward_of(step), observation(step + 1))
    if ends:
        segment.mark_episode_end()
    segment.finalize()
    rewards, values = [reward_of(s) for s in range(6)], [s / 10 for s in range(6)]
    targets = n_step_value_targets(segment, 1, 6, TD, GAMMA, None)
    expected = [hand_target(rewards, values, t, 6, ends) for t in range(1, 6)] + [0.0]
    np.testing.assert_allclose(targets, expected, rtol=1e-6)
    # Worked example: t=1, rewards r1=0, r2=0, r3=1, bootstrap V(o4)=0.4 -> 0.81 + 0.729 * 0.4.
    assert targets[0] == pytest.approx(GAMMA ** 2 * 1.0 + GAMMA ** 3 * 0.4)
    # The step right before a terminal observation: only its reward.
    if ends:
        assert targets[4] == pytest.approx(reward_of(5))


def test_n_step_targets_from_a_target_model():
    buffer = filled_buffer(num_steps=30)
    seen = {}

    def value_fn(request):
        seen['shape'] = request.observations.shape
        return request.observations[:, :, 1].astype(np.float32) * 100.0  # V(o_s) = 100 (s + 1)

    batch = buffer.sample_world_model_batch(30, target_value_fn=value_fn)
    assert seen['shape'] == (30, UNROLL, 12)
    rewards = [reward_of(s) for s in range(30)]
    values = [100.0 * (s + 1) for s in range(31)]
    for b in range(30):
        for j in range(UNROLL):
            t = int(batch.timesteps[b, 0]) + j
            if t >= 30:
                assert batch.target_values[b, j] == 0.0
                continue
            boot = min(t + TD, 30)
            expected = sum(GAMMA ** i * rewards[t + i] for i in range(boot - t))
            expected += 0.0 if boot == 30 else GAMMA ** (boot - t) * values[boot]  # o_30 is terminal
            assert batch.target_values[b, j] == pytest.approx(expected, rel=1e-5)


def test_fifo_eviction_keeps_the_newest_segments():
    buffer = make_buffer(capacity_transitions=10)
    builder = SegmentBuilder(ACTIONS, segment_length=4, pad_length=UNROLL, history_length=3)
    buffer.push_game_segments(play_episode(builder, 8, episode=0))
    buffer.push_game_segments(play_episode(builder, 8, episode=1))
    assert buffer.get_num_of_transitions() == 8
    texts = {t for row in buffer.sample_world_model_batch(16).observation_texts for t in row}
    assert all(t.startswith("ep1") for t in texts)


def test_llm_samples_carry_history_candidates_and_default_advantage():
    buffer = filled_buffer(num_steps=30)
    for sample in buffer.sample_llm_batch(20):
        step = int(sample.observation.split()[-1])
        assert sample.candidates == [f"ep0 s{step} act{i}" for i in range(ACTIONS)]
        assert sample.action_index == action_of(step)
        assert int(np.argmax(sample.visit_distribution)) == sample.action_index
        assert [turn.observation for turn in sample.history] == [f"ep0 obs {s}" for s in range(max(0, step - 3), step)]
        assert [turn.action for turn in sample.history] == [f"ep0 s{s} act{action_of(s)}"
                                                            for s in range(max(0, step - 3), step)]
        rewards, values = [reward_of(s) for s in range(30)], [s / 10 for s in range(30)]
        assert sample.advantage == pytest.approx(hand_target(rewards, values, step, 30, True) - step / 10, abs=1e-5)
        assert sample.old_prior_logprob == pytest.approx(np.log(1 / ACTIONS))


def test_llm_advantage_fn_receives_aligned_request():
    buffer = filled_buffer(num_steps=30)

    def advantage_fn(request):
        np.testing.assert_array_equal(request.bootstrap_timesteps,
                                      np.minimum(request.timesteps + TD, 30))
        np.testing.assert_array_equal(request.observations[:, 1], request.timesteps + 1)
        return request.timesteps.astype(np.float32) * 2

    for sample in buffer.sample_llm_batch(10, advantage_fn=advantage_fn):
        assert sample.advantage == 2 * int(sample.observation.split()[-1])


def test_llm_samples_skip_steps_without_prior():
    buffer = make_buffer()
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=UNROLL + TD, history_length=3)
    buffer.push_game_segments(play_episode(builder, 10, episode=0, with_prior=False))
    with pytest.raises(ValueError, match="empty"):
        buffer.sample_llm_batch(4)
    buffer.push_game_segments(play_episode(builder, 10, episode=1, with_prior=True))
    assert all(s.observation.startswith("ep1") for s in buffer.sample_llm_batch(16))


def test_state_dict_round_trip_restores_contents_and_rng():
    buffer = filled_buffer(num_steps=30)
    state = pickle.loads(pickle.dumps(buffer.state_dict()))
    restored = make_buffer()
    restored.load_state_dict(state)
    assert restored.get_num_of_transitions() == 30
    a, b = buffer.sample_world_model_batch(6), restored.sample_world_model_batch(6)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.target_values, b.target_values)
    assert a.observation_texts == b.observation_texts
    assert [s.observation for s in buffer.sample_llm_batch(5)] == [s.observation for s in restored.sample_llm_batch(5)]


def test_llm_samples_map_action_indices_back_to_candidate_positions():
    """With text-hash action indices, candidate k is discrete action action_indices[k], not k."""
    num_actions, permutation = 16, np.array([9, 2, 14, 5])
    builder = SegmentBuilder(num_actions, segment_length=8, pad_length=UNROLL + TD, history_length=3)

    def obs(step):
        o = observation(step)
        o.action_mask = np.zeros(num_actions, dtype=np.int8)
        o.action_mask[permutation] = 1
        o.action_indices = permutation
        return o

    def dec(step):
        d = decision(step)
        visits = np.zeros(num_actions, dtype=np.float32)
        visits[permutation] = d.visit_distribution
        d.action, d.visit_distribution = int(permutation[action_of(step)]), visits
        return d

    segments = builder.reset(obs(0))
    for step in range(20):
        segments += builder.append(dec(step), reward_of(step), obs(step + 1), step == 19)
    buffer = make_buffer(action_space_size=num_actions)
    buffer.push_game_segments(segments)
    for sample in buffer.sample_llm_batch(10):
        step = int(sample.observation.split()[-1])
        assert sample.candidates[sample.action_index] == f"ep0 s{step} act{action_of(step)}"
        assert int(np.argmax(sample.visit_distribution)) == sample.action_index
        assert sample.visit_distribution.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("truncated", [False, True])
def test_truncated_end_bootstraps_the_last_observation_and_terminated_end_bootstraps_zero(truncated):
    """10 steps cut into segments of 8 (+ 7 padded): near the end, only the kind of ending changes the targets."""
    steps = 10
    buffer = make_buffer(num_unroll_steps=UNROLL, td_steps=TD)
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=UNROLL + TD, history_length=3)
    segments = play_episode(builder, steps, truncated=truncated)
    assert [(s.num_own_steps, s.num_steps, s.ends_episode, s.truncated) for s in segments] == [
        (8, 10, True, truncated), (2, 2, True, truncated)]
    buffer.push_game_segments(segments)
    # the padded segment holds the final observation o_10 (what a truncated end bootstraps from)
    assert segments[0].text.raw_texts[-1] == segments[1].text.raw_texts[-1] == "ep0 obs 10"

    def value_fn(request):
        return request.observations[:, :, 1].astype(np.float32) * 100.0  # V(o_s) = 100 (s + 1)

    batch = buffer.sample_world_model_batch(40, target_value_fn=value_fn)
    checked = set()
    for b in range(batch.batch_size):
        for j in np.flatnonzero(batch.mask_padding[b]):
            t = int(batch.timesteps[b, j])
            if t >= 7:  # windows crossing the end: r_t + ... + r_9 then 0 (terminated) or gamma^k V(o_10)
                k = steps - t
                expected = sum(GAMMA ** i * reward_of(t + i) for i in range(k))
                expected += GAMMA ** k * 1100.0 if truncated else 0.0
                assert batch.target_values[b, j] == pytest.approx(expected, rel=1e-5)
                checked.add(t)
    assert checked == {7, 8, 9}
    # worked example at t = 8: r8 = 0, r9 = 1 (9 % 3 == 0); truncated adds 0.81 * V(o_10) = 0.81 * 1100
    target_8 = n_step_value_targets(segments[1], 0, 1, TD, GAMMA, np.array([1100.0]))[0]
    assert target_8 == pytest.approx(GAMMA * 1.0 + (GAMMA ** 2 * 1100.0 if truncated else 0.0))

    # LLM advantages: the same bootstrap discount (0 only for a terminated end)
    def advantage_fn(request):
        for t, discount in zip(request.timesteps, request.bootstrap_discounts):
            crosses_end = t + TD >= steps
            expected = GAMMA ** (min(t + TD, steps) - t) if (truncated or not crosses_end) else 0.0
            assert discount == pytest.approx(expected)
        return np.zeros(len(request.timesteps), dtype=np.float32)

    buffer.sample_llm_batch(40, advantage_fn=advantage_fn)
    # stored root values (no target model): a truncated end falls back to the last stored root value V(o_9) = 0.9
    root_target_9 = n_step_value_targets(segments[1], 1, 1, TD, GAMMA, None)[0]
    assert root_target_9 == pytest.approx(0.9 if truncated else reward_of(9))

    # checkpoints keep the flag
    restored = make_buffer()
    restored.load_state_dict(pickle.loads(pickle.dumps(buffer.state_dict())))
    assert [s.truncated for s in restored._segments] == [truncated, truncated]
    again = restored.sample_world_model_batch(40, target_value_fn=value_fn)
    assert again.target_values.shape == batch.target_values.shape


def test_segments_saved_before_the_truncation_flag_and_the_rename_still_load():
    buffer = filled_buffer(num_steps=12)
    state = buffer.state_dict()
    for segment_state in state['segments']:
        del segment_state['truncated']
        segment_state['arrays']['behaviour_logprobs'] = segment_state['arrays'].pop('old_prior_logprobs')
    restored = make_buffer()
    restored.load_state_dict(state)
    assert all(s.terminal for s in restored._segments if s.ends_episode)  # old episode ends count as terminated
    assert all(s.old_prior_logprob == pytest.approx(np.log(1 / ACTIONS)) for s in restored.sample_llm_batch(4))


def test_builder_rejects_truncation_without_done():
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=UNROLL + TD, history_length=3)
    builder.reset(observation(0))
    with pytest.raises(ValueError, match="truncated=True needs done=True"):
        builder.append(decision(0), 0.0, observation(1), False, True)


def test_llm_samples_carry_state_group_ids_and_can_be_drawn_in_state_groups():
    buffer = make_buffer(llm_group_size=3)
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=UNROLL + TD, history_length=3)
    for _ in range(3):  # the same 10 states three times (a deterministic game replayed)
        buffer.push_game_segments(play_episode(builder, 10))
    samples = buffer.sample_llm_batch(12)
    assert len(samples) == 12
    groups: dict[int, list] = {}
    for sample in samples:
        groups.setdefault(sample.group_id, []).append(sample.observation)
    for observations in groups.values():  # one state per group id, and the group is filled up to its size
        assert len(set(observations)) == 1
    assert all(len(g) % 3 == 0 for g in groups.values())  # whole groups (one state may be drawn twice)
    independent = make_buffer()
    independent.push_game_segments(play_episode(builder, 10))
    by_state = {s.observation: s.group_id for s in independent.sample_llm_batch(10)}
    assert len(set(by_state.values())) == 10  # ids depend on the state only, and differ between states
    assert all(by_state[s.observation] == s.group_id for s in samples)
