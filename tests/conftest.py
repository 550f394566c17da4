from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import make_tiny_unet

#: modules that start Ray runtimes or clusters: under pytest-xdist they run in one worker, one after another
#: (two at once would share two cores between two clusters whose tests time heartbeats and kills)
RAY_MODULES = {"test_cluster", "test_fidelity", "test_ray_search", "test_tune_engine"}


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: one core each, not two threads fighting for one
        torch.set_num_threads(1)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it (-p no:xdist) nothing to do
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (.ci/test) hands out whole modules — their module fixtures are built once — and the Ray
    modules as one unit."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "ray" if Path(module).stem in RAY_MODULES else module

    return ModuleScheduling(config, log)


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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty database per test: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trials.db'}"
        return
    import os
    import uuid

    import sqlalchemy as sa

    server = os.environ.get("SCHEDSEARCH_TEST_POSTGRES_URL")
    if not server:
        if os.environ.get("CI"):
            pytest.fail("CI must provide a PostgreSQL server (SCHEDSEARCH_TEST_POSTGRES_URL, see .ci/test)")
        pytest.skip("no PostgreSQL server (run the suite through .ci/test)")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
