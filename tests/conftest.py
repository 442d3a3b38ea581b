"""Shared fixtures. Tests run on CPU in seconds; real data lives outside the repo.

``COMPRESSOR_SHARED_DATA`` points at the shared evaluation material (akamaster checkpoints, CIFAR-10
files); ``.ci/run`` sets it when ``../shared/data`` exists. Tests that need it skip with a reason otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet_and_seeded(monkeypatch):
    monkeypatch.setenv("CI", "true")  # no progress bars in test output
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = os.environ.get("COMPRESSOR_SHARED_DATA")
    if not root:
        pytest.skip("COMPRESSOR_SHARED_DATA is not set (points at ../shared/data: checkpoints and CIFAR-10 files)")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"COMPRESSOR_SHARED_DATA={root} does not exist")
    return path


@pytest.fixture(scope="session")
def akamaster_resnet56(shared_data) -> Path:
    found = sorted((shared_data / "checkpoints" / "akamaster").glob("resnet56-*.th"))
    if not found:
        pytest.skip(f"no akamaster resnet56 checkpoint under {shared_data}/checkpoints/akamaster")
    return found[0]
