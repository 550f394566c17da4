"""Engines: in-process, a pool of Ray actors (local Ray or a running cluster), or Ray Tune with ASHA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Engine, EngineLost, Job, JobResult
from .local import LocalEngine

if TYPE_CHECKING:
    from ..config import SearchConfig


def make_engine(config: SearchConfig) -> Engine:
    """The engine a config asks for; workers build their evaluators from the config's evaluation spec."""
    spec = config.evaluation_spec()
    e = config.engine
    if e.kind == "local":
        return LocalEngine(spec)
    if e.kind == "tune":
        from .tune import TuneEngine

        return TuneEngine(spec, num_workers=e.num_workers, num_cpus=e.num_cpus, num_gpus=e.num_gpus,
                          address=e.ray_address, eta=e.asha_eta, levels=e.asha_levels, max_failures=e.max_failures)
    from .ray_pool import RayEngine

    return RayEngine(spec, num_workers=e.num_workers, num_cpus=e.num_cpus, num_gpus=e.num_gpus,
                     address=e.ray_address, rescan_s=e.rescan_s,
                     lost_after_s=e.head_timeout_s)


__all__ = ["Engine", "EngineLost", "Job", "JobResult", "LocalEngine", "make_engine"]
