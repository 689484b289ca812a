"""The models' inference form: the tracker folds EdgeTAM's RepViT trunk (BatchNorms and parallel branches into
single convolutions, timm's re-parameterisation) in place (SAM2Model.prepare_for_inference), and the eager runner
encodes images on a CPU with channels-last convolutions (forward_image(channels_last=True)); features equal the
plain model's to float rounding, and come out in the usual layout. No tracker changes the weights' layout: a model
shared by a compiled tracker and an eager one recompiles nothing."""

import copy

import pytest
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
    assert model.image_encoder.trunk.body.stem.conv1.weight.is_contiguous()
    for ours, reference in zip(tracker.runner.encode_image(images), unfolded.forward_image(images)):
        assert ours.is_contiguous() or ours.stride() == reference.stride()  # pos: the same expanded view
        scale = reference.abs().max()
        assert float((ours - reference).abs().max() / scale) < 1e-5

    # Idempotent: a second tracker on the same model (e.g. the node's next activation) changes nothing.
    state = {key: value.clone() for key, value in model.state_dict().items()}
    Tracker(model, TrackerConfig(max_objects=1))
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


@torch.inference_mode()
def test_channels_last_image_encoding_gives_the_same_features() -> None:
    model = seeded_model(256, "sam2.1_hiera_tiny").train()
    state = model.state_dict()
    assert model.prepare_for_inference() is model and not model.training
    assert list(model.state_dict()) == list(state)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    for ours, reference in zip(model.forward_image(images, channels_last=True), model.forward_image(images)):
        assert ours.is_contiguous() or ours.stride() == reference.stride()  # pos: the same expanded view
        assert float((ours - reference).abs().max() / reference.abs().max()) < 1e-5
    assert model.image_encoder.trunk.patch_embed.proj.weight.is_contiguous()


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "edgetam"])
@torch.inference_mode()
def test_channels_last_memory_encoding_gives_the_same_memories(name: str) -> None:
    model = seeded_model(256, name).prepare_for_inference()
    generator = torch.Generator().manual_seed(2)
    feat = torch.randn(1, 256, 16, 16, generator=generator).expand(2, -1, -1, -1)
    masks = 10 * torch.randn(2, 1, 256, 256, generator=generator)
    scores = torch.tensor([[1.0], [-1.0]])
    for ours, reference in zip(model.encode_memory(feat, masks, scores, False, channels_last=True),
                               model.encode_memory(feat, masks, scores, False)):
        assert ours.shape == reference.shape and ours.stride() == reference.stride()
        assert float((ours - reference).abs().max() / reference.abs().max()) < 1e-5
