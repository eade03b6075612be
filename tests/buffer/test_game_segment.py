import numpy as np
import pytest

from lzero_ext.buffer.game_segment import PriorZeroGameSegment, SegmentBuilder
from tests.buffer.helpers import ACTIONS, action_of, decision, observation, play_episode, reward_of


def test_builder_cuts_segments_and_pads_with_the_next_steps():
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=5, history_length=3)
    segments = play_episode(builder, num_steps=21)
    assert [s.num_own_steps for s in segments] == [8, 8, 5]
    # Segment 0 is padded with 5 steps of segment 1; segment 1 only gets the 5 that remain, and ends the episode.
    assert [s.num_steps for s in segments] == [13, 13, 5]
    assert [s.ends_episode for s in segments] == [False, True, True]
    for segment, first_step in zip(segments, [0, 8, 16]):
        segment.finalize()
        n = segment.num_steps
        assert segment.text.raw_texts == [f"ep0 obs {first_step + i}" for i in range(n + 1)]
        assert segment.arrays.actions.tolist() == [action_of(first_step + i) for i in range(n)]
        assert segment.arrays.rewards.tolist() == [reward_of(first_step + i) for i in range(n)]
        assert segment.arrays.tokens[:, 1].tolist() == [first_step + i + 1 for i in range(n + 1)]
        assert segment.text.executed_actions[0] == f"ep0 s{first_step} act{action_of(first_step)}"


def test_short_episode_pads_pending_segment_at_episode_end():
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=5, history_length=3)
    segments = play_episode(builder, num_steps=10)
    assert [(s.num_own_steps, s.num_steps, s.ends_episode) for s in segments] == [(8, 10, True), (2, 2, True)]


def test_flush_hands_over_unfinished_episode_without_terminal_flag():
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=5, history_length=3)
    segments = play_episode(builder, num_steps=11, done=False)
    assert [(s.num_own_steps, s.num_steps, s.ends_episode) for s in segments] == [(8, 11, False), (3, 3, False)]


def test_history_prefix_carries_turns_across_segments():
    builder = SegmentBuilder(ACTIONS, segment_length=4, pad_length=2, history_length=3)
    segments = play_episode(builder, num_steps=9)
    second = segments[1]
    second.finalize()
    observations, actions, rewards = second.history_before(1, max_turns=3)
    assert observations == ["ep0 obs 2", "ep0 obs 3", "ep0 obs 4"]
    assert actions == [f"ep0 s{s} act{action_of(s)}" for s in (2, 3, 4)]
    assert rewards == [reward_of(s) for s in (2, 3, 4)]


def test_pad_over_rejects_a_segment_that_does_not_continue_this_one():
    first = PriorZeroGameSegment(ACTIONS, segment_length=2, pad_length=2)
    first.reset(observation(0))
    first.append(decision(0), 0.0, observation(1))
    other = PriorZeroGameSegment(ACTIONS, segment_length=2, pad_length=2)
    other.reset(observation(5))
    other.append(decision(5), 0.0, observation(6))
    with pytest.raises(ValueError, match="does not start"):
        first.pad_over(other)


def test_append_validates_action_and_visit_shape():
    segment = PriorZeroGameSegment(ACTIONS, segment_length=4, pad_length=2)
    segment.reset(observation(0))
    bad = decision(0)
    bad.visit_distribution = np.ones(ACTIONS + 1)
    with pytest.raises(ValueError, match="visit_distribution"):
        segment.append(bad, 0.0, observation(1))
    bad = decision(0)
    bad.action = ACTIONS
    with pytest.raises(ValueError, match="outside"):
        segment.append(bad, 0.0, observation(1))


def test_builder_rejects_pad_longer_than_segment():
    with pytest.raises(ValueError, match="pad_length"):
        SegmentBuilder(ACTIONS, segment_length=4, pad_length=5, history_length=1)


def test_raw_visit_counts_are_stored_as_a_distribution():
    segment = PriorZeroGameSegment(ACTIONS, segment_length=4, pad_length=2)
    segment.reset(observation(0))
    counts = decision(0)
    counts.visit_distribution = np.array([2.0, 0.0, 6.0, 0.0])
    segment.append(counts, 0.0, observation(1))
    segment.finalize()
    np.testing.assert_allclose(segment.arrays.visit_distributions[0], [0.25, 0.0, 0.75, 0.0])
