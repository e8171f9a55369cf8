import pytest
import torch
import torch.nn.functional as F

from icreward.transforms import PreprocessConfig, center_crop, preprocess


def test_preprocess_shape_and_normalisation():
    cfg = PreprocessConfig(resize=32, crop=32)
    x = torch.full((2, 5, 3, 48, 64), 0.5)
    y = preprocess(x, cfg)
    assert y.shape == (2, 5, 3, 32, 32)
    expected = (0.5 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    torch.testing.assert_close(y[0, 0, :, 10, 10], expected)


def test_preprocess_matches_naive_reference():
    cfg = PreprocessConfig(resize=16, crop=12, interpolation="bilinear", antialias=False)
    x = torch.rand(3, 20, 30)
    ref = F.interpolate(x[None], size=(16, 24), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    ref = ref[:, 2:14, 6:18]
    ref = (ref - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)
    torch.testing.assert_close(preprocess(x, cfg), ref)


def test_preprocess_is_differentiable():
    x = torch.rand(1, 3, 40, 40, requires_grad=True)
    preprocess(x, PreprocessConfig(resize=24, crop=20)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_center_crop_pads_small_inputs():
    assert center_crop(torch.ones(3, 4, 6), 8).shape == (3, 8, 8)


def test_config_round_trip():
    cfg = PreprocessConfig(resize=256, crop=224)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="3 channels"):
        preprocess(torch.rand(4, 8, 8), PreprocessConfig())
