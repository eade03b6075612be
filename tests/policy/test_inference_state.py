"""Acting-only policy copies (async and Ray collection) load the learner's weights through inference_state."""
import pytest
import torch
from easydict import EasyDict

from ding.policy import create_policy
from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    cfg, create_cfg = get_priorzero_debug_config(exp_name=str(tmp_path_factory.mktemp("inference_state")))
    policy_cfg = EasyDict(dict(cfg.policy, type=create_cfg.policy.type, import_names=create_cfg.policy.import_names))
    learner = create_policy(policy_cfg, enable_field=['learn', 'collect', 'eval'])
    actor = create_policy(policy_cfg, enable_field=['collect', 'eval'])
    return learner, actor


def test_acting_copy_receives_both_models_and_versions(policies):
    learner, actor = policies
    with torch.no_grad():  # make the learner differ from the freshly built copy
        next(learner._model.parameters()).add_(0.5)
        next(learner.llm_prior.model.parameters()).add_(0.5)
    learner._wm_learner.train_steps = 7
    learner.llm_prior._set_version(3)
    state = learner.inference_state()
    assert (state['weights_version'], state['wm_version']) == (3, 7)
    assert all(t.device.type == 'cpu' for t in list(state['world_model'].values()) + list(state['llm'].values()))
    actor.load_inference_state(state)
    assert (actor.weights_version, actor.wm_version) == (3, 7)
    for key, value in learner._model.state_dict().items():
        assert torch.equal(actor._model.state_dict()[key], value.cpu()), key
    for key, value in learner.llm_prior.model.state_dict().items():
        assert torch.equal(actor.llm_prior.model.state_dict()[key], value), key
    # A snapshot, not a view: later learner updates do not leak into it.
    with torch.no_grad():
        next(learner._model.parameters()).add_(1.0)
    assert not torch.equal(next(iter(state['world_model'].values())), next(learner._model.parameters()))


def test_state_without_llm_keeps_the_copy_s_llm_weights(policies):
    learner, actor = policies
    before = {k: v.clone() for k, v in actor.llm_prior.model.state_dict().items()}
    state = learner.inference_state(include_llm=False)
    assert state['llm'] is None
    actor.load_inference_state(state)
    for key, value in actor.llm_prior.model.state_dict().items():
        assert torch.equal(before[key], value), key


def test_learning_policy_refuses_to_load_an_inference_state(policies):
    learner, _ = policies
    with pytest.raises(ValueError, match="acting-only"):
        learner.load_inference_state(learner.inference_state())
