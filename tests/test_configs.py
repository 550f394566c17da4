"""Every shipped config validates, and its search space can be built for its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedsearch.search.config import load_config
from schedsearch.search.space import SearchSpace
from schedsearch.solvers import load_model

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.name and config.budget >= 1
    spec = config.space_spec()
    if config.model.startswith("builtin:"):
        model = load_model(config.model, device="cpu")
        SearchSpace(spec, model.noise_schedule, has_data_mean=model.data_mean is not None)
        assert config.evaluation_spec().search_samples == config.fidelity.samples[-1]


def test_the_shipped_configs_cover_the_documented_cases():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "nfe_sweep", "guided", "gmm", "cluster", "refine"} <= names
    assert load_config(Path(CONFIGS[0]).parent / "cluster.yaml").engine.kind == "ray"
