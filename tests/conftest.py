from __future__ import annotations

import pytest
import torch

from tests.helpers import make_tiny_unet


@pytest.fixture(scope="session")
def tiny_unet():
    return make_tiny_unet()


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
