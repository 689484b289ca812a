"""EdgeTAM's inference form: the tracker folds the RepViT trunk (BatchNorms and parallel branches into single
convolutions, timm's re-parameterisation) in place; features equal the unfolded trunk's to float rounding."""

import copy

import torch

from sam2_rt import Tracker, TrackerConfig
from testkit.oracle import seeded_model


def _randomize_batchnorm_statistics(model: torch.nn.Module) -> None:
    """Non-trivial running statistics (fresh ones are mean 0, var 1: folding them would change almost nothing)."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))


@torch.inference_mode()
def test_tracker_folds_the_trunk_and_the_features_stay_the_same() -> None:
    model = seeded_model(256, "edgetam")
    _randomize_batchnorm_statistics(model)
    unfolded = copy.deepcopy(model)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    assert not model.image_encoder.trunk.reparameterized
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.image_encoder.trunk.modules())
    assert batchnorms > 50

    tracker = Tracker(model, TrackerConfig(max_objects=1))
    assert tracker.model is model and model.image_encoder.trunk.reparameterized and not model.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.image_encoder.trunk.modules())
    for ours, reference in zip(model.forward_image(images), unfolded.forward_image(images)):
        scale = reference.abs().max()
        assert float((ours - reference).abs().max() / scale) < 1e-5

    # Idempotent: a second tracker on the same model (e.g. the node's next activation) changes nothing.
    state = {key: value.clone() for key, value in model.state_dict().items()}
    Tracker(model, TrackerConfig(max_objects=1))
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_sam2_models_are_only_put_in_eval_mode() -> None:
    model = seeded_model(256, "sam2.1_hiera_tiny").train()
    keys = list(model.state_dict())
    assert model.prepare_for_inference() is model and not model.training
    assert list(model.state_dict()) == keys
