"""make_shapes: deterministic, balanced, varied, and pinned (the quickstart checkpoint was trained on it)."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.data.synthetic import CLASS_NAMES, SPLIT_SEEDS, make_shapes

# Fingerprint of make_shapes(20, SPLIT_SEEDS[split]): labels, per-image mean pixel value and mean absolute
# difference of horizontal neighbours (edges + noise). If this test fails, the generator changed and
# compressor/assets/quicknet_shapes.pt no longer matches its images: retrain it or undo the change.
PINNED = {
    "train": ([6, 9, 4, 2, 4, 0, 3, 8, 7, 5, 1, 1, 7, 9, 0, 8, 2, 6, 5, 3],
              [97.45, 109.06, 90.43, 139.79, 61.85, 86.15, 103.69, 102.23, 145.5, 187.01, 170.38, 109.99,
               111.1, 140.88, 67.77, 123.66, 130.0, 163.05, 100.48, 113.81],
              [16.62, 26.26, 27.39, 18.96, 21.19, 18.32, 20.02, 30.1, 15.36, 19.18, 26.64, 24.17, 14.11, 21.8,
               27.96, 24.81, 19.37, 23.92, 12.86, 14.73]),
    "test": ([4, 8, 9, 3, 3, 8, 2, 5, 5, 4, 0, 7, 1, 6, 0, 9, 1, 6, 7, 2],
             [111.59, 129.68, 86.4, 124.37, 210.11, 114.02, 141.65, 126.45, 167.15, 81.2, 110.21, 137.55,
              138.77, 66.85, 176.95, 146.95, 142.6, 156.42, 95.18, 163.34],
             [23.59, 24.51, 11.07, 22.54, 17.51, 20.34, 15.43, 24.05, 17.78, 19.91, 18.97, 24.61, 20.79, 27.17,
              11.39, 27.65, 24.12, 16.52, 11.76, 14.04]),
}


@pytest.mark.parametrize("split", ["train", "test"])
def test_generator_output_is_pinned(split):
    images, labels = make_shapes(20, SPLIT_SEEDS[split])
    expected_labels, expected_means, expected_edges = PINNED[split]
    assert labels.tolist() == expected_labels
    pixels = images.astype(np.float64)
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)), expected_means, atol=0.1)
    np.testing.assert_allclose(np.abs(np.diff(pixels, axis=-1)).mean(axis=(1, 2, 3)), expected_edges, atol=0.1)


def test_shapes_dtype_and_layout():
    images, labels = make_shapes(30, seed=1)
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert make_shapes(10, seed=1, image_size=48)[0].shape == (10, 3, 48, 48)


def test_deterministic_for_arguments_and_different_for_another_seed():
    a, la = make_shapes(50, seed=3)
    b, lb = make_shapes(50, seed=3)
    c, _ = make_shapes(50, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_classes_are_balanced_and_shuffled():
    _, labels = make_shapes(1000, seed=0)
    assert np.bincount(labels, minlength=10).tolist() == [100] * 10
    assert not np.array_equal(labels, np.sort(labels))
    counts = np.bincount(make_shapes(25, seed=0)[1], minlength=10)
    assert counts.max() - counts.min() <= 1
    assert len(CLASS_NAMES) == 10


def test_images_are_varied_and_use_the_full_range():
    images, _ = make_shapes(200, seed=0)
    assert len({img.tobytes() for img in images}) == 200
    per_image_std = images.reshape(200, -1).std(1)
    assert per_image_std.min() > 5  # never a flat image: a shape and noise are always there
    assert images.min() == 0 and images.max() == 255


@pytest.mark.slow
def test_a_small_cnn_learns_the_task():
    """Learnability guard (~10 s): a ~3 M MAC CNN trained briefly on 3,000 images generalises to the test split."""
    import torch
    from torch import nn

    def tensors(split: str, n: int):
        images, labels = make_shapes(n, SPLIT_SEEDS[split])
        return (torch.from_numpy(images).float() / 255 - 0.5) / 0.25, torch.from_numpy(labels)

    (x, y), (xt, yt) = tensors("train", 3000), tensors("test", 1000)
    net = nn.Sequential(*_block(3, 16), nn.MaxPool2d(2), *_block(16, 32), nn.MaxPool2d(2), *_block(32, 64),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    epochs, batch = 5, 50
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=epochs * (len(y) // batch))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xt).argmax(1) == yt).float().mean().item()
    assert accuracy > 0.6, f"test accuracy {accuracy:.3f} (typically about 0.78)"


def _block(cin: int, cout: int) -> list:
    from torch import nn

    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_shapes(0, seed=0)
    with pytest.raises(ValueError):
        make_shapes(10, seed=0, image_size=4)
