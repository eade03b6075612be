"""World-model learner speed options: bf16 autocast, fused AdamW, length-bucketed encoding (issue 7).

bf16 autocast runs on the CPU too, so the numerics are checked here; the CUDA-only parts (TF32, fused kernel) run in
the CUDA test when a GPU is present.
"""
import copy

import numpy as np
import pytest
import torch

from lzero_ext.buffer.game_buffer import BootstrapRequest
from lzero_ext.policy.text_encoder import MIN_BUCKET_ROWS, TextObservationEncoder
from lzero_ext.policy.wm_learner import WorldModelLearner
from lzero_ext.policy.world_model import build_world_model

from .test_world_model import OBS_LEN, UNROLL, VOCAB, tiny_batch, tiny_model_config


def _uneven_tokens(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    """Token ids with lengths from 1 to ``width`` (and one all-padding row), padding id 0."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (rows, width), generator=generator)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    lengths[3] = 0
    tokens[torch.arange(width)[None] >= lengths[:, None]] = 0
    return tokens


def _encoder_pair(width: int) -> tuple[TextObservationEncoder, TextObservationEncoder]:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, max_seq_len=width, embed_dim=16, hidden_dim=16, num_heads=2, num_layers=2)
    one = TextObservationEncoder(dict(cfg, length_buckets=1))
    bucketed = TextObservationEncoder(dict(cfg, length_buckets=4))
    bucketed.load_state_dict(one.state_dict())
    return one, bucketed


def test_length_buckets_give_the_same_latents_and_gradients():
    one, bucketed = _encoder_pair(width=40)
    tokens = _uneven_tokens(4 * MIN_BUCKET_ROWS + 5, 40)
    _assert_same_latents_and_gradients(one, bucketed, tokens)


def _assert_same_latents_and_gradients(reference: TextObservationEncoder, other: TextObservationEncoder,
                                       tokens: torch.Tensor) -> None:
    a, b = reference(tokens), other(tokens)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    (a * torch.arange(a.shape[1])).sum().backward()
    (b * torch.arange(b.shape[1])).sum().backward()
    for (name, p), q in zip(reference.named_parameters(), other.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_small_batches_are_one_chunk():
    _, bucketed = _encoder_pair(width=40)
    calls = []
    original = bucketed._encode
    bucketed._encode = lambda *args: calls.append(args[0].shape) or original(*args)
    bucketed(_uneven_tokens(2 * MIN_BUCKET_ROWS - 1, 40))
    assert len(calls) == 1
    calls.clear()
    bucketed(_uneven_tokens(4 * MIN_BUCKET_ROWS, 40))
    assert len(calls) == 4 and sum(shape[0] for shape in calls) == 4 * MIN_BUCKET_ROWS
    assert [shape[1] for shape in calls] == sorted(shape[1] for shape in calls)  # each chunk trimmed to its longest


def _packed_pair(width: int, dropout: float = 0.0) -> tuple[TextObservationEncoder, TextObservationEncoder]:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, max_seq_len=width, embed_dim=16, hidden_dim=16, num_heads=2, num_layers=2,
               dropout=dropout)
    padded = TextObservationEncoder(dict(cfg, packed_attention="off"))
    packed = TextObservationEncoder(dict(cfg, packed_attention="on"))
    packed.load_state_dict(padded.state_dict())
    return padded, packed


def _spy_packed_passes(encoder: TextObservationEncoder) -> list[torch.Size]:
    """Record the token shape of every packed pass of ``encoder`` (after deduplication)."""
    calls = []
    original = encoder._encode_tokens_packed
    encoder._encode_tokens_packed = lambda *args: calls.append(args[0].shape) or original(*args)
    return calls


def test_packed_attention_gives_the_same_latents_and_gradients():
    padded, packed = _packed_pair(width=40)
    tokens = _uneven_tokens(4 * MIN_BUCKET_ROWS + 5, 40)  # bucketed on the padded side, one all-padding row
    calls = _spy_packed_passes(packed)
    _assert_same_latents_and_gradients(padded, packed, tokens)
    assert calls == [tokens.shape]  # the whole batch in one packed pass, never the padded chunks


def test_packed_path_encodes_each_distinct_observation_once_with_the_same_result():
    padded, packed = _packed_pair(width=40)
    distinct = _uneven_tokens(20, 40)
    tokens = distinct[torch.tensor([0, 1, 2, 0, 3, 3, 3] + list(range(4, 20)) + [19, 1])]  # repeats, out of order
    calls = _spy_packed_passes(packed)
    _assert_same_latents_and_gradients(padded, packed, tokens)  # gradients of the copies add up as if encoded apart
    assert calls == [distinct.shape]
    packed.cfg.deduplicate = False
    packed(tokens)
    assert calls[-1] == tokens.shape


def test_packed_attention_auto_keeps_the_padded_path_on_cpu_and_with_dropout():
    padded, _ = _packed_pair(width=12, dropout=0.1)
    auto = TextObservationEncoder(dict(padded.cfg, packed_attention="auto"))
    assert not auto._packs(torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not auto._packs(torch.device("cpu"))
    with pytest.raises(ValueError, match="packed_attention"):
        TextObservationEncoder(dict(padded.cfg, packed_attention="always"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash variable-length attention needs CUDA")
def test_packed_attention_on_cuda_uses_flash_varlen_and_matches_the_padded_path():
    padded, _ = _packed_pair(width=40)
    padded = padded.cuda()
    auto = TextObservationEncoder(dict(padded.cfg, packed_attention="auto")).cuda()
    auto.load_state_dict(padded.state_dict())
    tokens = _uneven_tokens(4 * MIN_BUCKET_ROWS + 5, 40).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert auto._packs(tokens.device)
        a, b = padded(tokens), auto(tokens)
    torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)
    b.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in auto.parameters() if p.grad is not None)


def test_length_buckets_must_be_positive():
    with pytest.raises(ValueError, match="length_buckets"):
        TextObservationEncoder(dict(vocab_size=VOCAB, max_seq_len=OBS_LEN, embed_dim=16, hidden_dim=8, num_heads=2,
                                    length_buckets=0))


def test_attention_kernels_restrict_cuda_attention_only_inside_the_layers():
    cfg = dict(vocab_size=VOCAB, max_seq_len=OBS_LEN, embed_dim=16, hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="attention_kernels"):
        TextObservationEncoder(dict(cfg, attention_kernels="cudnn_only"))
    restricted = TextObservationEncoder(dict(cfg, attention_kernels="no_cudnn"))
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with restricted._attention_kernels(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # restored on exit
    with TextObservationEncoder(dict(cfg, attention_kernels="auto"))._attention_kernels(torch.device("cuda")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before  # 'auto' leaves PyTorch's choice alone


def test_kernel_and_chunking_choices_do_not_block_resuming():
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config

    from lzero_ext.entry.hybrid_loop import architecture_fingerprint

    cfg, _ = get_priorzero_debug_config()
    changed = copy.deepcopy(cfg)
    changed.policy.model.encoder.update(attention_kernels="auto", length_buckets=1)
    assert architecture_fingerprint(changed) == architecture_fingerprint(cfg)
    changed.policy.model.encoder.hidden_dim *= 2
    assert architecture_fingerprint(changed) != architecture_fingerprint(cfg)


def test_mixed_precision_auto_is_fp32_on_cpu_and_unknown_values_raise():
    model = build_world_model(tiny_model_config())
    assert WorldModelLearner(model).autocast_dtype is None
    assert WorldModelLearner(model, dict(mixed_precision='bf16')).autocast_dtype is torch.bfloat16
    with pytest.raises(ValueError, match="mixed_precision"):
        WorldModelLearner(model, dict(mixed_precision='fp8'))
    with pytest.raises(KeyError):
        WorldModelLearner(model, dict(mixed_precison='bf16'))


def _learner_pair() -> tuple[WorldModelLearner, WorldModelLearner]:
    torch.manual_seed(0)
    fp32 = WorldModelLearner(build_world_model(tiny_model_config()), dict(learning_rate=3e-3, mixed_precision='none'))
    bf16 = WorldModelLearner(copy.deepcopy(fp32.model), dict(learning_rate=3e-3, mixed_precision='bf16'))
    bf16.target_model.load_state_dict(fp32.target_model.state_dict())
    return fp32, bf16


def test_bf16_losses_are_finite_and_close_to_fp32():
    fp32, bf16 = _learner_pair()
    batch = tiny_batch()
    for step in range(3):
        a, b = fp32.train_step(batch), bf16.train_step(batch)
        assert bf16.skipped_updates == 0 and np.isfinite(b['wm/total_loss']) and np.isfinite(b['wm/grad_norm'])
        for key in ('wm/total_loss', 'wm/obs_loss', 'wm/reward_loss', 'wm/value_loss', 'wm/policy_loss'):
            assert b[key] == pytest.approx(a[key], rel=0.05, abs=2e-3), (step, key)
    for (name, p), q in zip(fp32.model.named_parameters(), bf16.model.parameters()):
        assert q.dtype == torch.float32, name  # fp32 master weights


def test_bf16_training_still_learns_a_fixed_batch():
    _, bf16 = _learner_pair()
    batch = tiny_batch()
    metrics = [bf16.train_step(batch) for _ in range(25)]
    assert metrics[-1]['wm/total_loss'] < 0.7 * metrics[0]['wm/total_loss']
    assert bf16.skipped_updates == 0


def test_bf16_target_values_are_float32_numpy_close_to_fp32():
    fp32, bf16 = _learner_pair()
    rng = np.random.default_rng(0)
    request = BootstrapRequest(rng.integers(1, VOCAB, (3, UNROLL, OBS_LEN)), np.ones((3, UNROLL, OBS_LEN), bool),
                               np.zeros((3, UNROLL), np.int64), np.zeros((3, UNROLL), np.int64))
    fp32.train_step(tiny_batch())  # non-zero value head (UniZero zero-initialises its last layer)
    bf16.model.load_state_dict(fp32.model.state_dict())
    bf16.target_model.load_state_dict(fp32.model.state_dict())
    fp32.target_model.load_state_dict(fp32.model.state_dict())
    a, b = fp32.target_value_fn(request), bf16.target_value_fn(request)
    assert b.dtype == np.float32 and b.shape == (3, UNROLL)
    np.testing.assert_allclose(b, a, atol=0.05 + 0.02 * np.abs(a).max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_defaults_bf16_fused_adamw_and_checkpoint_round_trip():
    torch.manual_seed(0)
    learner = WorldModelLearner(build_world_model(tiny_model_config(device='cuda')))
    assert learner.autocast_dtype is torch.bfloat16
    assert all(group['fused'] for group in learner.optimizer.param_groups)
    batch = tiny_batch()
    assert np.isfinite(learner.train_step(batch)['wm/total_loss'])
    clone = WorldModelLearner(build_world_model(tiny_model_config(device='cuda')))
    clone.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert all(group['fused'] for group in clone.optimizer.param_groups)
    assert np.isfinite(clone.train_step(batch)['wm/total_loss'])
