import copy

import numpy as np
import pytest
import torch
from lzero.model.unizero_model import UniZeroModel

from lzero_ext.buffer.game_buffer import BootstrapRequest, PriorZeroGameBuffer
from lzero_ext.buffer.game_segment import SegmentBuilder, StepDecision, StepObservation
from lzero_ext.policy.text_encoder import TextObservationEncoder
from lzero_ext.policy.wm_learner import WorldModelLearner
from lzero_ext.policy.world_model import build_world_model

VOCAB, OBS_LEN, ACTIONS, UNROLL = 64, 10, 3, 4


def tiny_model_config(**overrides) -> dict:
    cfg = dict(vocab_size=VOCAB, max_seq_len=OBS_LEN, action_space_size=ACTIONS, embed_dim=32, num_layers=1,
               num_heads=2, group_size=8, num_unroll_steps=UNROLL, infer_context_length=2, env_num=2,
               num_simulations=4, dropout=0.0, encoder=dict(hidden_dim=16, num_layers=1, num_heads=2))
    cfg.update(overrides)
    return cfg


def tiny_batch(seed: int = 0, batch_size: int = 6):
    """A small replay of a deterministic 'game' whose reward and best action depend on the observation."""
    rng = np.random.default_rng(seed)

    def obs(step: int) -> StepObservation:
        tokens = np.zeros(OBS_LEN, dtype=np.int64)
        length = 3 + step % 4
        tokens[:length] = rng.integers(1, VOCAB, length)
        return StepObservation(tokens, (tokens != 0).astype(np.int64), np.ones(ACTIONS, np.int8),
                               f"obs {step}", ["a", "b", "c"], step)

    buffer = PriorZeroGameBuffer(dict(action_space_size=ACTIONS, num_unroll_steps=UNROLL, td_steps=2, seed=seed))
    builder = SegmentBuilder(ACTIONS, segment_length=8, pad_length=UNROLL + 2, history_length=2)
    segments = builder.reset(obs(0))
    for step in range(16):
        visits = np.eye(ACTIONS, dtype=np.float32)[step % ACTIONS]
        decision = StepDecision(step % ACTIONS, "abc"[step % ACTIONS], visits, float(step % 2))
        segments += builder.append(decision, float(step % 2), obs(step + 1), done=step == 15)
    buffer.push_game_segments(segments)
    return buffer.sample_world_model_batch(batch_size)


def test_build_returns_a_unizero_model_with_our_encoder():
    model = build_world_model(tiny_model_config())
    assert isinstance(model, UniZeroModel)
    assert isinstance(model.representation_network, TextObservationEncoder)
    assert model.world_model.tokenizer.encoder is model.representation_network
    assert model.world_model.config.obs_type == 'text'
    assert next(model.parameters()).device.type == 'cpu'


def test_unknown_config_key_is_an_error():
    with pytest.raises(KeyError, match="embed_dim"):
        build_world_model(tiny_model_config(embed_dimm=32))


def test_initial_inference_runs_on_token_observations():
    model = build_world_model(tiny_model_config()).eval()
    obs = torch.randint(1, VOCAB, (2, OBS_LEN))
    output = model.initial_inference(obs, [-1, -1], obs, start_pos=np.zeros(2, dtype=np.int64))
    assert output.policy_logits.shape == (2, ACTIONS)
    assert output.value.shape == (2, 101)
    assert output.latent_state.shape == (2, 1, 32)


def test_encoder_handles_padding_only_rows_and_rejects_long_input():
    encoder = TextObservationEncoder(dict(vocab_size=VOCAB, max_seq_len=OBS_LEN, embed_dim=16, hidden_dim=8,
                                          num_heads=2))
    out = encoder(torch.zeros(2, OBS_LEN, dtype=torch.long))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.view(2, -1, 8).sum(-1), torch.ones(2, 2))  # SimNorm groups sum to one
    with pytest.raises(ValueError, match="max_seq_len"):
        encoder(torch.ones(1, OBS_LEN + 1, dtype=torch.long))


def test_every_encoder_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build_world_model(tiny_model_config())
    learner = WorldModelLearner(model, dict(learning_rate=1e-3))
    batch = tiny_batch()
    learner.train_step(batch)  # UniZero zero-initialises the heads' last layers: no gradient reaches the trunk at step 0
    model.zero_grad(set_to_none=True)
    gpt_batch = learner._to_gpt_batch(batch)
    losses = model.world_model.compute_loss(gpt_batch, learner.target_model.world_model.tokenizer,
                                            learner._inverse_transform)
    losses.loss_total.backward()
    for name, param in model.representation_network.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_train_steps_on_a_fixed_batch_lower_the_total_loss():
    torch.manual_seed(0)
    model = build_world_model(tiny_model_config())
    learner = WorldModelLearner(model, dict(learning_rate=3e-3))
    batch = tiny_batch()
    metrics = [learner.train_step(batch) for _ in range(25)]
    assert set(metrics[0]) >= {'wm/total_loss', 'wm/policy_loss', 'wm/value_loss', 'wm/reward_loss', 'wm/obs_loss',
                               'wm/grad_norm'}
    assert metrics[-1]['wm/total_loss'] < 0.7 * metrics[0]['wm/total_loss']
    assert learner.train_steps == 25 and learner.skipped_updates == 0


def test_loss_weights_come_from_the_config():
    torch.manual_seed(0)
    batch = tiny_batch()
    base = WorldModelLearner(build_world_model(tiny_model_config()))
    weights = dict(obs_loss_weight=0.0, reward_loss_weight=0.0, value_loss_weight=0.0, policy_loss_weight=1.0)
    policy_only = WorldModelLearner(build_world_model(tiny_model_config()), weights)
    policy_only.model.load_state_dict(base.model.state_dict())
    policy_only.target_model.load_state_dict(base.target_model.state_dict())
    metrics = policy_only.train_step(batch)
    assert metrics['wm/total_loss'] == pytest.approx(metrics['wm/policy_loss'], rel=1e-6)


def test_soft_target_update_moves_target_by_theta():
    model = build_world_model(tiny_model_config())
    learner = WorldModelLearner(model, dict(target_update_theta=0.25))
    before = {k: v.clone() for k, v in learner.target_model.named_parameters()}
    learner.train_step(tiny_batch())
    online = dict(model.named_parameters())
    for name, param in learner.target_model.named_parameters():
        torch.testing.assert_close(param, 0.75 * before[name] + 0.25 * online[name].detach())


def test_non_finite_loss_skips_the_update():
    model = build_world_model(tiny_model_config())
    learner = WorldModelLearner(model)
    with torch.no_grad():
        model.world_model.head_value.head_module[0].weight.fill_(float('nan'))
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = learner.train_step(tiny_batch())
    assert metrics == {'wm/skipped_updates': 1.0}
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshot[name], equal_nan=True)


def test_learner_state_dict_round_trip():
    torch.manual_seed(0)
    batch = tiny_batch()
    learner = WorldModelLearner(build_world_model(tiny_model_config()))
    learner.train_step(batch)
    state = copy.deepcopy(learner.state_dict())  # as a checkpoint file would (optimizer state is not copied)
    clone = WorldModelLearner(build_world_model(tiny_model_config()))
    clone.load_state_dict(state)
    assert clone.train_steps == 1
    a, b = learner.train_step(batch), clone.train_step(batch)
    assert a['wm/total_loss'] == pytest.approx(b['wm/total_loss'], rel=1e-6)
    for (name, p), q in zip(learner.model.named_parameters(), clone.model.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_target_value_fn_returns_a_value_per_bootstrap_position():
    learner = WorldModelLearner(build_world_model(tiny_model_config()))
    batch = tiny_batch()
    assert np.isfinite(batch.target_values).all()
    rng = np.random.default_rng(0)
    request = BootstrapRequest(rng.integers(1, VOCAB, (3, UNROLL, OBS_LEN)), np.ones((3, UNROLL, OBS_LEN), bool),
                               np.zeros((3, UNROLL), np.int64), np.zeros((3, UNROLL), np.int64))
    values = learner.target_value_fn(request)
    assert values.shape == (3, UNROLL) and np.isfinite(values).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_step_on_cuda():
    model = build_world_model(tiny_model_config(device='cuda'))
    assert next(model.parameters()).is_cuda
    metrics = WorldModelLearner(model).train_step(tiny_batch())
    assert np.isfinite(metrics['wm/total_loss'])


def test_encoder_output_ignores_trailing_padding():
    torch.manual_seed(0)
    encoder = TextObservationEncoder(dict(vocab_size=VOCAB, max_seq_len=3 * OBS_LEN, embed_dim=16, hidden_dim=8,
                                          num_heads=2)).eval()
    short = torch.randint(1, VOCAB, (3, OBS_LEN))
    short[1, 4:] = 0
    padded = torch.cat([short, torch.zeros(3, 2 * OBS_LEN, dtype=torch.long)], dim=1)
    torch.testing.assert_close(encoder(padded), encoder(short))


def test_train_step_leaves_the_model_in_its_previous_mode():
    model = build_world_model(tiny_model_config()).eval()
    WorldModelLearner(model).train_step(tiny_batch())
    assert not model.training


def test_learning_rate_schedule_decays_and_resumes_from_a_checkpoint():
    from lzero_ext.policy.wm_learner import WorldModelLearner

    cfg = dict(learning_rate=1e-3, lr_schedule="linear", total_steps=4, min_lr_ratio=0.25)
    learner = WorldModelLearner(build_world_model(tiny_model_config()), cfg)
    batch = tiny_batch()
    rates = [learner.train_step(batch)["wm/lr"] for _ in range(3)]
    assert rates == pytest.approx([1e-3, 1e-3 * 0.8125, 1e-3 * 0.625])
    state = learner.state_dict()
    resumed = WorldModelLearner(build_world_model(tiny_model_config()), cfg)
    resumed.load_state_dict(state)
    old = dict(state, scheduler=None)
    del old["scheduler"]  # a checkpoint written before the schedule existed continues at its step too
    legacy = WorldModelLearner(build_world_model(tiny_model_config()), cfg)
    legacy.load_state_dict(old)
    for other in (resumed, legacy):
        assert other.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.4375)
    assert learner.train_step(batch)["wm/lr"] == pytest.approx(1e-3 * 0.4375)
