"""Baseline solvers as points of the decision space.

A baseline's name means the default configuration of its reference implementation
(diffusers' ``DPMSolverMultistepScheduler``, ``UniPCMultistepScheduler``,
``DDIMScheduler``; iPNDM as in DEIS): the same orders per step (warm-up, lower order at
the final steps), the same derivative weights, ending at the data (σ = 0) — or, for
noise-prediction DPM-Solver, at the smallest trained noise level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import ScheduleError
from .grids import model_times
from .models import DiffusionModel
from .noise_schedules import NoiseSchedule
from .schedule import Corrector, Derivative, Estimator, Prediction, Schedule, Step

StepsFactory = Callable[[int, bool], list[Step]]


def _dpm_orders(n: int, max_order: int, to_data: bool) -> list[int]:
    """diffusers' multistep DPM-Solver orders: warm-up, ``lower_order_final`` below 15 steps."""
    orders = [min(max_order, i + 1) for i in range(n)]
    if n < 15 and n >= 2:
        orders[-2] = min(orders[-2], 2)
    if n < 15 or to_data:
        orders[-1] = 1
    return orders


def _dpm_step(prediction: Prediction, order: int) -> Step:
    if order == 2:  # diffusers' default solver_type "midpoint": the B(h) = eᶻ−1 weight
        return Step(prediction, 2, estimator=Estimator.BH2)
    if order == 3:  # diffusers' multistep third order weights its D2 term by one half
        pts = (-1, -2)
        return Step(prediction, 3, derivatives=(Derivative(pts), Derivative(pts, 0.5)))
    return Step(prediction, order)


def _dpm(prediction: Prediction, max_order: int) -> StepsFactory:
    def steps(n: int, to_data: bool) -> list[Step]:
        return [_dpm_step(prediction, k) for k in _dpm_orders(n, max_order, to_data)]

    return steps


def _unipc(estimator: Estimator, corrector: bool, max_order: int = 2) -> StepsFactory:
    def steps(n: int, to_data: bool) -> list[Step]:
        out = []
        for i in range(n):
            order = min(max_order, n - i, i + 1)  # warm-up and lower_order_final
            corr = Corrector.PSEUDO if corrector and i < n - 1 else Corrector.NONE
            out.append(Step(Prediction.DATA, order, corrector=corr, estimator=estimator))
        return out

    return steps


def _ipndm(n: int, to_data: bool) -> list[Step]:
    return [Step(Prediction.NOISE, min(4, i + 1), estimator=Estimator.IPNDM) for i in range(n)]


#: name → (steps factory, ends at the data)
BASELINES: dict[str, tuple[StepsFactory, bool]] = {
    "ddim": (_dpm(Prediction.DATA, 1), True),
    "dpm_solver_1": (_dpm(Prediction.NOISE, 1), False),
    "dpm_solver_2": (_dpm(Prediction.NOISE, 2), False),
    "dpm_solver_3": (_dpm(Prediction.NOISE, 3), False),
    "dpmpp_2m": (_dpm(Prediction.DATA, 2), True),
    "dpmpp_3m": (_dpm(Prediction.DATA, 3), True),
    "unipc_bh1": (_unipc(Estimator.BH1, corrector=True), True),
    "unipc_bh2": (_unipc(Estimator.BH2, corrector=True), True),
    "unip_bh1": (_unipc(Estimator.BH1, corrector=False), True),
    "unip_bh2": (_unipc(Estimator.BH2, corrector=False), True),
    "ipndm": (_ipndm, True),
}


def baseline(
    name: str,
    nfe: int,
    model: DiffusionModel | NoiseSchedule,
    grid: str | Sequence[float] = "uniform_lambda",
) -> Schedule:
    """The schedule of baseline ``name`` with ``nfe`` model evaluations on ``grid``."""
    if name not in BASELINES:
        raise ScheduleError(f"baseline: unknown {name!r} (known: {', '.join(BASELINES)})")
    ns = model.noise_schedule if isinstance(model, DiffusionModel) else model
    factory, to_data = BASELINES[name]
    times = model_times(grid, nfe, ns)
    final = ns.data_time if to_data else ns.t_min
    if not to_data and times[-1] <= final:
        raise ScheduleError(
            f"grid {grid if isinstance(grid, str) else 'list'}: its last model time {times[-1]:g} leaves no room "
            f"for the final time {final:g} of noise-prediction solver {name!r}"
        )
    grid_name = grid if isinstance(grid, str) else "custom"
    return Schedule(
        time_domain=ns.time_domain,
        timesteps=(*times, final),
        steps=tuple(factory(nfe, to_data)),
        provenance={"baseline": name, "grid": grid_name},
    )
