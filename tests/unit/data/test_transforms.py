"""Eval and train transforms: numerics, geometry, channel conversion, reproducible augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.config import Augment
from compressor.data.transforms import (
    ImageTransform,
    center_crop,
    fit,
    match_channels,
    pad_random_crop,
    random_resized_crop,
)

from .conftest import MEAN3, STD3


def _image(h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (c, h, w), dtype=np.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_eval_normalisation_numerics():
    image = np.stack([np.full((4, 4), v, np.uint8) for v in (0, 128, 255)])
    out = ImageTransform((4, 4), 3, MEAN3, STD3)(image)
    expected = [(v / 255 - m) / s for v, m, s in zip((0, 128, 255), MEAN3, STD3)]
    assert out.dtype == torch.float32 and out.shape == (3, 4, 4)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected, dtype=torch.float32))
    assert torch.equal(out, out[:, :1, :1].expand(3, 4, 4))


def test_eval_resizes_to_the_input_size_when_sizes_differ():
    out = ImageTransform((32, 32), 3, MEAN3, STD3)(_image(40, 50))
    assert out.shape == (3, 32, 32)


def test_eval_keeps_a_same_size_image_untouched():
    image = _image()
    out = ImageTransform((32, 32), 3, (0.0,) * 3, (1.0,) * 3)(image)
    torch.testing.assert_close(out, torch.from_numpy(image).float() / 255)


def test_resize_shorter_side_then_center_crop():
    x = torch.rand(3, 40, 60)
    out = fit(x, (32, 32), 40)  # shorter side already 40: no resize, crop only
    torch.testing.assert_close(out, x[:, 4:36, 14:46])
    assert fit(torch.rand(3, 100, 50), (32, 32), 36).shape == (3, 32, 32)


def test_resize_matches_pil_bilinear_closely():
    image = _image(64, 64)
    ours = fit(torch.from_numpy(image).float() / 255, (32, 32), None)
    pil = Image.fromarray(image.transpose(1, 2, 0)).resize((32, 32), Image.BILINEAR)
    reference = torch.from_numpy(np.asarray(pil).transpose(2, 0, 1).copy()).float() / 255
    assert (ours - reference).abs().max() < 3 / 255


def test_center_crop_pads_small_images():
    assert center_crop(torch.ones(1, 10, 10), (12, 12)).shape == (1, 12, 12)


def test_match_channels():
    rgb = torch.rand(3, 5, 5)
    assert torch.equal(match_channels(rgb, 3), rgb)
    grey = torch.rand(1, 5, 5)
    assert torch.equal(match_channels(grey, 3), grey.expand(3, 5, 5))
    rgba = torch.rand(4, 5, 5)
    assert torch.equal(match_channels(rgba, 3), rgba[:3])
    image = _image(8, 8)
    luma = match_channels(torch.from_numpy(image).float(), 1)
    pil = np.asarray(Image.fromarray(image.transpose(1, 2, 0)).convert("L")).astype(np.float32)
    assert np.abs(luma[0].numpy() - pil).max() <= 1.0


def test_pad_random_crop_keeps_size_and_shows_zero_padding():
    x = torch.ones(3, 8, 8)
    outs = [pad_random_crop(x, 4, _gen(seed)) for seed in range(20)]
    assert all(o.shape == (3, 8, 8) for o in outs)
    assert any((o == 0).any() for o in outs)
    assert all(o.sum() >= 3 * 4 * 4 for o in outs)  # at least the central 4x4 of the image survives
    assert torch.equal(pad_random_crop(x, 4, _gen(3)), pad_random_crop(x, 4, _gen(3)))


def test_random_resized_crop_shape_and_reproducibility():
    x = torch.rand(3, 40, 30)
    a = random_resized_crop(x, (16, 16), _gen(1))
    assert a.shape == (3, 16, 16)
    assert torch.equal(a, random_resized_crop(x, (16, 16), _gen(1)))
    assert not torch.equal(a, random_resized_crop(x, (16, 16), _gen(2)))
    assert random_resized_crop(torch.rand(3, 1, 200), (8, 8), _gen(0)).shape == (3, 8, 8)  # fallback box


def test_hflip_flips_about_half_of_the_time():
    image = _image(8, 8)
    plain = ImageTransform((8, 8), 3, MEAN3, STD3)(image)
    flip = ImageTransform((8, 8), 3, MEAN3, STD3, augment=Augment(hflip=True))
    gen = _gen(0)
    outs = [flip(image, gen) for _ in range(200)]
    flipped = sum(torch.equal(o, plain.flip(-1)) for o in outs)
    assert sum(torch.equal(o, plain) for o in outs) + flipped == 200
    assert 70 < flipped < 130


@pytest.mark.parametrize("augment", [Augment(random_crop_padding=4, hflip=True),
                                     Augment(random_resized_crop=True, hflip=True)])
def test_train_transform_is_reproducible_for_a_seed(augment):
    transform = ImageTransform((24, 24), 3, MEAN3, STD3, resize=28, augment=augment)
    image = _image(40, 36)
    a = [transform(image, g) for g in [_gen(5)] for _ in range(4)]
    b = [transform(image, g) for g in [_gen(5)] for _ in range(4)]
    c = [transform(image, g) for g in [_gen(6)] for _ in range(4)]
    assert all(x.shape == (3, 24, 24) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
