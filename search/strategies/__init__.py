"""Strategies behind one ask/tell seam: random, S³ steady-state and AutoDiffusion generational
evolution, S³'s predictor-guided search, Optuna's TPE / CMA-ES / NSGA-II / GP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from schedsearch.predictors.spectrum import ModelSpectrum

from ..space import SearchSpace
from .base import Observation, Proposal, Strategy
from .evolution import GenerationalEvolution, SteadyStateEvolution
from .guided import PredictorGuided
from .optuna_samplers import SAMPLERS, OptunaStrategy
from .random import RandomSearch

STRATEGIES = ("random", "evolution", "generational", "guided", *SAMPLERS)


def make_strategy(name: str, space: SearchSpace, rng: np.random.Generator, options: dict[str, Any] | None = None,
                  storage: str | None = None, search_name: str = "search",
                  measure_spectrum: Callable[[], ModelSpectrum] | None = None) -> Strategy:
    """The strategy called ``name`` (see ``STRATEGIES``); Optuna ones keep their study in ``storage``; the guided one
    measures the model's spectrum with ``measure_spectrum`` when it first needs it."""
    options = dict(options or {})
    if name == "random":
        return RandomSearch(space, rng, **options)
    if name == "evolution":
        return SteadyStateEvolution(space, rng, **options)
    if name == "generational":
        return GenerationalEvolution(space, rng, **options)
    if name == "guided":
        return PredictorGuided(space, rng, **options, measure_spectrum=measure_spectrum)
    if name in SAMPLERS:
        if storage is None:
            raise ValueError(f"strategy {name!r} needs a database for its Optuna study")
        return OptunaStrategy(space, rng, name, storage, search_name, **options)
    raise ValueError(f"strategy: unknown {name!r} (known: {', '.join(STRATEGIES)})")


__all__ = ["STRATEGIES", "GenerationalEvolution", "Observation", "OptunaStrategy", "PredictorGuided", "Proposal", "RandomSearch",
           "SteadyStateEvolution", "Strategy", "make_strategy"]
