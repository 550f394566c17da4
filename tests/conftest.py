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


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime, started once per test session."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
