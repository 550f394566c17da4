"""Time grids: the N model-evaluation times of a baseline schedule.

Continuous grids place N+1 points from t_max down to t_min and evaluate the model at
the first N (the last point is the final time, or is replaced by the data time σ = 0),
which is what diffusers' ``linspace`` spacing does for integer timesteps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import ScheduleError
from .noise_schedules import DiscreteVP, NoiseSchedule, RectifiedFlow


def _uniform_t(ns: NoiseSchedule, n: int) -> np.ndarray:
    return np.linspace(ns.t_max, ns.t_min, n + 1)


def _finite_lambda(ns: NoiseSchedule, grid: str) -> tuple[float, float]:
    lo, hi = float(ns.lambda_(ns.t_max)), float(ns.lambda_(ns.t_min))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ScheduleError(f"grid {grid!r} needs finite λ at both ends of [{ns.t_min:g}, {ns.t_max:g}] (α, σ > 0)")
    return lo, hi


def _uniform_lambda(ns: NoiseSchedule, n: int) -> np.ndarray:
    lam = np.linspace(*_finite_lambda(ns, "uniform_lambda"), n + 1)
    return _endpoints(ns, ns.t_of_lambda(lam))


def _quadratic(ns: NoiseSchedule, n: int) -> np.ndarray:
    """Time-quadratic grid of DPM-Solver: t = (linspace(√t_max, √t_min))²."""
    return np.linspace(np.sqrt(ns.t_max), np.sqrt(ns.t_min), n + 1) ** 2


def _karras(ns: NoiseSchedule, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (EDM) ρ = 7 spacing of σ/α."""
    lam_hi, lam_lo = _finite_lambda(ns, "karras")
    hi, lo = np.exp(-lam_hi / rho), np.exp(-lam_lo / rho)
    return _endpoints(ns, ns.t_of_rho(np.linspace(hi, lo, n + 1) ** rho))


def _endpoints(ns: NoiseSchedule, times: np.ndarray) -> np.ndarray:
    """Pin the ends exactly (round trips through λ lose the last bits)."""
    times = np.asarray(times, dtype=np.float64).copy()
    times[0], times[-1] = ns.t_max, ns.t_min
    return times


def _discrete(ns: NoiseSchedule, name: str) -> DiscreteVP:
    if not isinstance(ns, DiscreteVP):
        raise ScheduleError(f"grid {name!r} exists only for discrete-time (diffusers) models")
    return ns


def _linspace(ns: NoiseSchedule, n: int) -> np.ndarray:
    T = _discrete(ns, "linspace").num_train_timesteps
    return np.linspace(0, T - 1, n + 1).round()[::-1].copy()


def _leading(ns: NoiseSchedule, n: int) -> np.ndarray:
    """DDIM's ``leading`` spacing (steps_offset 0); the N model times only."""
    T = _discrete(ns, "leading").num_train_timesteps
    return (np.arange(0, n) * (T // n)).round()[::-1].astype(np.float64)


def _trailing(ns: NoiseSchedule, n: int) -> np.ndarray:
    """diffusers' ``trailing`` spacing; the N model times only."""
    T = _discrete(ns, "trailing").num_train_timesteps
    return np.arange(T, 0, -T / n).round() - 1.0


def _shifted(ns: NoiseSchedule, n: int) -> np.ndarray:
    """Flow models: FlowMatchEulerDiscreteScheduler's own spacing of N steps — linear before the model's
    timestep shift s (σ ↦ sσ / (1 + (s − 1)σ)) from t_max down to t_min, then shifted (diffusers keeps the
    smallest training σ already shifted and shifts it again; so does this grid); the N model times only."""
    if not isinstance(ns, RectifiedFlow):
        raise ScheduleError("grid 'shifted' exists only for flow-matching models")
    s = ns.shift
    u = np.linspace(ns.t_max / (s - (s - 1) * ns.t_max), ns.t_min, n)  # t_max before its shift
    return s * u / (1 + (s - 1) * u)


#: name → (function, whether it returns N+1 points with the final one included)
GRIDS: dict[str, tuple[Callable[[NoiseSchedule, int], np.ndarray], bool]] = {
    "uniform_t": (_uniform_t, True),
    "uniform_lambda": (_uniform_lambda, True),
    "quadratic": (_quadratic, True),
    "karras": (_karras, True),
    "linspace": (_linspace, True),
    "leading": (_leading, False),
    "trailing": (_trailing, False),
    "shifted": (_shifted, False),
}


def _ays(ns: NoiseSchedule, name: str, n: int) -> np.ndarray:
    """Align-Your-Steps lists shipped by diffusers, log-linearly interpolated to N points."""
    from diffusers.schedulers.scheduling_utils import AysSchedules

    if name not in AysSchedules:
        raise ScheduleError(f"grid: unknown AYS list {name!r} (known: {', '.join(sorted(AysSchedules))})")
    base = np.asarray(AysSchedules[name], dtype=np.float64)
    if base.size == n:
        return base
    log_rho = np.log(ns.rho(base))
    new = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, base.size), log_rho)
    return np.asarray(ns.t_of_rho(np.exp(new)), dtype=np.float64)


def model_times(grid: str | Sequence[float], n: int, ns: NoiseSchedule) -> tuple[float, ...]:
    """The N times at which a baseline on ``grid`` evaluates the model."""
    if n < 1:
        raise ScheduleError(f"nfe: {n} must be at least 1")
    if not isinstance(grid, str):
        times = tuple(float(t) for t in grid)
        if len(times) != n:
            raise ScheduleError(f"grid: {len(times)} times given for nfe {n}")
        return _inside(times, ns, None)
    if grid.startswith("ays:"):
        return _inside(tuple(float(t) for t in _ays(ns, grid[4:], n)), ns, grid)
    if grid not in GRIDS:
        raise ScheduleError(f"grid: unknown {grid!r} (known: {', '.join(GRIDS)}, ays:<name>, or a list of times)")
    fn, with_final = GRIDS[grid]
    times = fn(ns, n)
    return _inside(tuple(float(t) for t in (times[:-1] if with_final else times)), ns, grid)


def _inside(times: tuple[float, ...], ns: NoiseSchedule, grid: str | None) -> tuple[float, ...]:
    """The model times, each inside the model's range [t_min, t_max] (NaN refused too)."""
    lo, hi = ns.t_min, ns.t_max
    tol = 1e-9 * max(1.0, abs(hi))
    for t in times:
        if not lo - tol <= t <= hi + tol:
            what = f"time {t:g} is" if grid is None else f"{grid!r} places a time at {t:g},"
            raise ScheduleError(f"grid: {what} outside the model's range [{lo:g}, {hi:g}]")
    return times
