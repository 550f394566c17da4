"""A schedule as numbers a network can read: one feature row per step, plus the schedule's globals.

Per step i (t_i → t_{i+1}): λ at both ends (scaled to the model's λ range, the data's +∞
mapped to a fixed cap), the step size h in λ, the order, prediction, estimator and
corrector (one-hot), and for each of up to three derivatives its active points (a mask
over the offsets −1…−4) and its relaxation. Globals: NFE, the analytical first step
(one-hot) and the guidance scale. With ``probe``, each step's row also carries the schedule's
relative error after that step on Gaussian data (:mod:`.probe`), and with a model ``spectrum`` its errors on
the model's measured sensitivity curves (:mod:`.spectrum`). Schedules of different lengths
are padded into one batch with a mask. Pure functions of the schedule and the model's noise
schedule; no torch state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np
import torch
from schedsearch.solvers import AnalyticFirstStep, Corrector, Estimator, NoiseSchedule, Prediction, Schedule
from schedsearch.solvers.schedule import StructureKey
from schedsearch.solvers.step_table import StepTable, step_table

from .probe import PROBE_FEATURES, probe_columns
from .spectrum import ModelSpectrum

MAX_DERIVATIVES = 3
MAX_OFFSET = 4
_PREDICTIONS = (Prediction.DATA, Prediction.NOISE)
_ESTIMATORS = (Estimator.TAYLOR, Estimator.BH1, Estimator.BH2, Estimator.IPNDM)
_CORRECTORS = (Corrector.NONE, Corrector.PSEUDO, Corrector.IMPLICIT)
_ANALYTIC = (None, AnalyticFirstStep.ZERO, AnalyticFirstStep.MEAN)
#: features per step: λ_s, λ_t, h, to-data flag, order/4, one-hots, derivative points and relaxations
STEP_FEATURES = 5 + 4 + len(_PREDICTIONS) + len(_ESTIMATORS) + len(_CORRECTORS) + MAX_DERIVATIVES * (MAX_OFFSET + 1)
GLOBAL_FEATURES = 1 + len(_ANALYTIC) + 1


def step_width(probe: bool, spectrum: int = 0) -> int:
    """Features per step row: the schedule's own, plus the Gaussian probe's errors with ``probe``, plus ``spectrum``
    columns of errors on the model's measured sensitivity curves."""
    return STEP_FEATURES + (PROBE_FEATURES if probe else 0) + spectrum


@dataclass(frozen=True)
class LambdaRange:
    """The model's λ range, to scale λ into about [−1, 1] (the data's λ = +∞ is mapped to 1.5)."""

    lo: float
    hi: float

    @classmethod
    def of(cls, noise_schedule: NoiseSchedule) -> LambdaRange:
        lam = noise_schedule.lambda_([noise_schedule.t_max, noise_schedule.t_min])
        return cls(float(lam[0]), float(lam[1]))

    def scale(self, lam: float) -> float:
        if not np.isfinite(lam):
            return 1.5
        return 2.0 * (lam - self.lo) / (self.hi - self.lo) - 1.0


def _one_hot(value: object, options: Sequence[object]) -> list[float]:
    return [1.0 if value == o else 0.0 for o in options]


#: the column of derivative k's relaxation in a step's decision features
_RELAXATION_COLUMNS = [1 + 4 + len(_PREDICTIONS) + len(_ESTIMATORS) + len(_CORRECTORS) + k * (MAX_OFFSET + 1) + MAX_OFFSET
                       for k in range(MAX_DERIVATIVES)]


@lru_cache(maxsize=1 << 12)
def _structure_features(key: StructureKey) -> tuple[float, ...]:
    """The λ-free part of a step's row, but its relaxations (a pure function of the step's structure, so
    memoised: a search space has a few hundred)."""
    prediction, order, estimator, corrector, points = key
    row = [order / 4.0]
    row += _one_hot(order, (1, 2, 3, 4))
    row += _one_hot(prediction, _PREDICTIONS)
    row += _one_hot(estimator, _ESTIMATORS)
    row += _one_hot(corrector, _CORRECTORS)
    for k in range(MAX_DERIVATIVES):
        active = points[k] if k < len(points) else ()
        row += [1.0 if -o in active else 0.0 for o in range(1, MAX_OFFSET + 1)]
        row.append(0.0)  # the relaxation's column: set per step
    return tuple(row)


def _step_rows(schedules: Sequence[Schedule], lengths: np.ndarray, lam: np.ndarray, lam_range: LambdaRange,
               table: StepTable) -> np.ndarray:
    """``[total steps, STEP_FEATURES]``: every schedule's rows in order, given λ at their concatenated times
    and the table of their steps."""
    finite = np.isfinite(lam)
    scaled = np.where(finite, 2.0 * (np.where(finite, lam, 0.0) - lam_range.lo) / (lam_range.hi - lam_range.lo) - 1.0,
                      1.5)
    start = np.arange(int(lengths.sum())) + np.repeat(np.arange(len(schedules)), lengths)  # t_i of each step
    out = np.zeros((len(start), STEP_FEATURES), dtype=np.float32)
    out[:, 0] = scaled[start]
    out[:, 1] = scaled[start + 1]
    out[:, 2] = scaled[start + 1] - scaled[start]
    out[:, 3] = ~finite[start + 1]
    if len(table):
        decisions = np.array([_structure_features(key) for key in table.structures], dtype=np.float32)
        out[:, 4:] = decisions[table.structure]
        for k, column in enumerate(_RELAXATION_COLUMNS[: table.relaxations.shape[1]]):
            out[:, 4 + column] = table.relaxations[:, k] - 1.0  # 0 past a step's derivatives (relaxation 1)
    return out


def _concatenated_lambda(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule) -> np.ndarray:
    times = np.fromiter(chain.from_iterable(s.timesteps for s in schedules), dtype=np.float64)
    return np.asarray(noise_schedule.lambda_(times), dtype=np.float64)


def step_features(schedule: Schedule, lam_range: LambdaRange, noise_schedule: NoiseSchedule) -> np.ndarray:
    """``[num_steps, STEP_FEATURES]`` float32 features of ``schedule``."""
    return _step_rows([schedule], np.array([schedule.num_steps]), _concatenated_lambda([schedule], noise_schedule),
                      lam_range, step_table(schedule.steps))


def global_features(schedules: Sequence[Schedule], guidance_scale: float | None = None) -> np.ndarray:
    """``[B, GLOBAL_FEATURES]`` float32: NFE / 10, the analytical first step (one-hot) and the guidance scale / 10
    (``guidance_scale``, else each schedule's own, else 0)."""
    out = np.zeros((len(schedules), GLOBAL_FEATURES), dtype=np.float32)
    out[:, 0] = np.fromiter((s.nfe for s in schedules), dtype=np.float64, count=len(schedules)) / 10.0
    analytic = np.fromiter((_ANALYTIC.index(s.analytic_first_step) for s in schedules), dtype=np.int64,
                           count=len(schedules))
    out[np.arange(len(schedules)), 1 + analytic] = 1.0
    scales = [s.guidance_scale for s in schedules] if guidance_scale is None else [guidance_scale]
    out[:, -1] = np.array([0.0 if v is None else float(v) for v in scales]) / 10.0
    return out


@dataclass(frozen=True)
class EncodedBatch:
    """Padded step features ``[B, S, F]``, their mask ``[B, S]`` (True = a real step) and globals ``[B, G]``."""

    steps: torch.Tensor
    mask: torch.Tensor
    globals: torch.Tensor

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def index(self, idx: torch.Tensor | Sequence[int]) -> EncodedBatch:
        return EncodedBatch(self.steps[idx], self.mask[idx], self.globals[idx])


def encode(schedules: Sequence[Schedule], noise_schedule: NoiseSchedule,
           guidance_scale: float | None = None, probe: bool = False, spectrum: ModelSpectrum | None = None
           ) -> EncodedBatch:
    """One padded batch for ``schedules`` (of any lengths): λ of every time in one vectorised call, the
    structure-only part of every step's row once per structure (:mod:`schedsearch.solvers.step_table`)."""
    lengths = np.array([s.num_steps for s in schedules], dtype=np.int64)
    longest = int(lengths.max(initial=1))
    extra = 0 if spectrum is None else spectrum.width
    steps = np.zeros((len(schedules), longest, step_width(probe, extra)), dtype=np.float32)
    mask = np.arange(longest) < lengths[:, None]
    if schedules:
        lam = _concatenated_lambda(schedules, noise_schedule)
        table = step_table([step for s in schedules for step in s.steps])
        steps[mask, :STEP_FEATURES] = _step_rows(schedules, lengths, lam, LambdaRange.of(noise_schedule), table)
        if probe or spectrum is not None:
            steps[..., STEP_FEATURES:] = np.where(mask[..., None],
                                                  probe_columns(schedules, noise_schedule, probe, spectrum, table), 0.0)
    return EncodedBatch(torch.from_numpy(steps), torch.from_numpy(mask),
                        torch.from_numpy(global_features(schedules, guidance_scale)))
