"""The schedule: N+1 times t₀ > … > t_N and one solver decision per interval (USF).

A :class:`Schedule` is a frozen value. Constructing one validates it structurally (times
monotone and finite, orders legal for their position, derivative points that exist,
no corrector on the last step); :meth:`Schedule.check_for` checks it against a
model's noise schedule (time domain and range). ``to_json``/``from_json`` implement
the ``schedsearch.schedule/1`` format and its successor ``/2`` (written only for schedules with
learned numbers — ``free`` steps or model times — so every other schedule keeps its /1 file and
hash); every error names the offending field.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import ScheduleError
from .noise_schedules import DATA_TIME, NoiseSchedule

FORMAT = "schedsearch.schedule/1"
#: the format of schedules with learned numbers (free weights, model times); files of either format load
FORMAT_V2 = "schedsearch.schedule/2"
FORMATS = (FORMAT, FORMAT_V2)
MAX_ORDER = 4


class Prediction(StrEnum):
    """Which model prediction the step integrates: x̂₀ (data) or ε̂ (noise)."""

    DATA = "data"
    NOISE = "noise"


class Corrector(StrEnum):
    """Correction of a step's result with the model output at its end point.

    ``pseudo`` (UniC) re-uses the next step's evaluation (no extra NFE); ``implicit``
    evaluates the model at the predicted point (one extra NFE).
    """

    NONE = "none"
    PSEUDO = "pseudo"
    IMPLICIT = "implicit"


class Estimator(StrEnum):
    """How finite differences enter the update.

    ``taylor``: exact φ-function weights of the interpolating polynomial (DPM-Solver
    Taylor form). ``bh1``/``bh2``: UniPC's B(h) forms: a first derivative from a single
    difference is weighted B(h)/2 (B = h, or eᶻ−1) instead of hφ₂; for fits of higher
    degree B(h) cancels and the weights are exact. ``ipndm``: improved PNDM, fixed
    Adams–Bashforth weights on ε̂ in the σ/α variable (noise prediction only). ``free``:
    the weights of the step (and of its corrector) on its points are given explicitly
    (learned by refinement); the ratio on x_s stays the exact one.
    """

    TAYLOR = "taylor"
    BH1 = "bh1"
    BH2 = "bh2"
    IPNDM = "ipndm"
    FREE = "free"


class AnalyticFirstStep(StrEnum):
    """Replace the first model evaluation by x̂₀ = 0 or x̂₀ = the data mean (saves one NFE)."""

    ZERO = "zero"
    MEAN = "mean"


@dataclass(frozen=True)
class Derivative:
    """Estimate of one derivative by finite differences over earlier points.

    ``active_points`` are offsets into the history (−1 = the previous point); the
    estimate is the derivative of the polynomial through the current point and these
    points, scaled by ``relaxation``.
    """

    active_points: tuple[int, ...]
    relaxation: float = 1.0


#: a step's structure (:attr:`Step.structure`)
StructureKey = tuple[Prediction, int, Estimator, Corrector, tuple[tuple[int, ...], ...]]


@dataclass(frozen=True)
class Step:
    """The decision for one interval t_i → t_{i+1}.

    ``weights`` (``free`` steps only) are (offset, weight) pairs on the step's points: 0 (the
    current point) and every derivative's active points, in that order; ``corrector_weights``
    (free steps with a corrector) the same on those points and +1, the point at the step's end.
    ``model_time`` (learned by refinement; None: the point's own time t_i) is the time the network
    is told when it evaluates the step's point; the solver's coefficients still use t_i.
    """

    prediction: Prediction = Prediction.DATA
    order: int = 1
    derivatives: tuple[Derivative, ...] = ()
    corrector: Corrector = Corrector.NONE
    estimator: Estimator = Estimator.TAYLOR
    weights: tuple[tuple[int, float], ...] = ()
    corrector_weights: tuple[tuple[int, float], ...] = ()
    model_time: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prediction", Prediction(self.prediction))
        object.__setattr__(self, "corrector", Corrector(self.corrector))
        object.__setattr__(self, "estimator", Estimator(self.estimator))
        if not self.derivatives and self.order > 1:
            object.__setattr__(self, "derivatives", default_derivatives(self.order))
        object.__setattr__(self, "derivatives", tuple(self.derivatives))
        object.__setattr__(self, "weights", tuple((int(j), float(w)) for j, w in self.weights))
        object.__setattr__(self, "corrector_weights", tuple((int(j), float(w)) for j, w in self.corrector_weights))
        if self.model_time is not None:
            object.__setattr__(self, "model_time", float(self.model_time))
        object.__setattr__(self, "_structure", (self.prediction, self.order, self.estimator, self.corrector,
                                                tuple([d.active_points for d in self.derivatives])))

    @property
    def structure(self) -> StructureKey:
        """Its discrete decisions: prediction, order, estimator, corrector and each derivative's active points
        (what steps of a search share; their relaxations, weights and model times vary). Kept from construction:
        tables of many steps read it (:mod:`.step_table`)."""
        return self._structure  # type: ignore[attr-defined]

    @property
    def points(self) -> tuple[int, ...]:
        """Offsets of the model outputs the predictor reads: 0, then each derivative's new active points."""
        out = [0]
        for der in self.derivatives:
            out.extend(p for p in der.active_points if p not in out)
        return tuple(out)


def default_derivatives(order: int) -> tuple[Derivative, ...]:
    """All derivatives from one fit through the ``order − 1`` most recent points."""
    points = tuple(range(-1, -order, -1))
    return tuple(Derivative(points) for _ in range(order - 1))


@dataclass(frozen=True)
class Schedule:
    """Times t₀ > … > t_N (in the model's time domain) and N steps."""

    time_domain: str
    timesteps: tuple[float, ...]
    steps: tuple[Step, ...]
    analytic_first_step: AnalyticFirstStep | None = None
    guidance_scale: float | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timesteps", tuple(float(t) for t in self.timesteps))
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.analytic_first_step is not None:
            object.__setattr__(self, "analytic_first_step", AnalyticFirstStep(self.analytic_first_step))
        _validate(self)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def nfe(self) -> int:
        """Model evaluations: steps − (analytic first step) + implicit correctors."""
        implicit = sum(step.corrector is Corrector.IMPLICIT for step in self.steps)
        return len(self.steps) - (self.analytic_first_step is not None) + implicit

    @property
    def ends_at_data(self) -> bool:
        return self.timesteps[-1] == DATA_TIME[self.time_domain]

    def check_for(self, noise_schedule: NoiseSchedule) -> None:
        """Raise :class:`ScheduleError` unless every time lies in the model's range."""
        if noise_schedule.time_domain != self.time_domain:
            raise ScheduleError(
                f"time_domain: schedule is {self.time_domain!r} but the model uses {noise_schedule.time_domain!r}"
            )
        lo, hi = noise_schedule.t_min, noise_schedule.t_max
        for i, t in enumerate(self.timesteps):
            if i == len(self.timesteps) - 1 and noise_schedule.is_data_time(t):
                continue
            if not lo - 1e-9 <= t <= hi + 1e-9:
                raise ScheduleError(f"timesteps[{i}]: {t:g} is outside the model's range [{lo:g}, {hi:g}]")
        for i, step in enumerate(self.steps):
            t = step.model_time
            if t is not None and not lo - 1e-9 <= t <= hi + 1e-9:
                raise ScheduleError(f"steps[{i}].model_time: {t:g} is outside the model's range [{lo:g}, {hi:g}]")

    @property
    def learned(self) -> bool:
        """Whether the schedule carries learned numbers (free weights or model times) beyond its times."""
        return any(step.estimator is Estimator.FREE or step.model_time is not None for step in self.steps)

    # -- JSON -----------------------------------------------------------------------------

    @property
    def format(self) -> str:
        """The file format this schedule needs: /2 with learned numbers (free steps, model times), else /1."""
        return FORMAT_V2 if self.learned else FORMAT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "time_domain": self.time_domain,
            "timesteps": list(self.timesteps),
            "steps": [_step_to_dict(s) for s in self.steps],
        }
        if self.analytic_first_step is not None:
            out["analytic_first_step"] = self.analytic_first_step.value
        out["nfe"] = self.nfe
        if self.guidance_scale is not None:
            out["guidance_scale"] = self.guidance_scale
        if self.provenance:
            out["provenance"] = dict(self.provenance)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"schedule JSON is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Schedule:
        return _from_dict(data)

    def canonical_hash(self) -> str:
        """SHA-256 of the decisions and times (provenance excluded), for de-duplication."""
        body = self.to_dict()
        body.pop("provenance", None)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# -- validation ---------------------------------------------------------------------------


def _validate(s: Schedule) -> None:
    if s.time_domain not in DATA_TIME:
        raise ScheduleError(f"time_domain: unknown {s.time_domain!r} (known: {', '.join(DATA_TIME)})")
    n = len(s.steps)
    if n < 1:
        raise ScheduleError("steps: a schedule needs at least one step")
    if len(s.timesteps) != n + 1:
        raise ScheduleError(f"timesteps: expected {n + 1} times for {n} steps, got {len(s.timesteps)}")
    for i, t in enumerate(s.timesteps):
        if not math.isfinite(t):
            raise ScheduleError(f"timesteps[{i}]: {t} is not finite")
        if i and t >= s.timesteps[i - 1]:
            what = "duplicates" if t == s.timesteps[i - 1] else "is larger than"
            raise ScheduleError(f"timesteps[{i}]: {t:g} {what} timesteps[{i - 1}]; times must strictly decrease")
    data_time = DATA_TIME[s.time_domain]
    if data_time in s.timesteps[:-1]:
        i = s.timesteps.index(data_time)
        raise ScheduleError(f"timesteps[{i}]: the data time {data_time:g} (σ = 0) may only be the final time")
    for i, step in enumerate(s.steps):
        _validate_step(i, step, last=i == n - 1, to_data=i == n - 1 and s.ends_at_data)
    if s.nfe < 1:
        raise ScheduleError("steps: the schedule makes no model evaluation (nfe = 0)")
    if s.guidance_scale is not None and not math.isfinite(s.guidance_scale):
        raise ScheduleError(f"guidance_scale: {s.guidance_scale} is not finite")
    if s.analytic_first_step is not None and s.steps[0].model_time is not None:
        raise ScheduleError("steps[0].model_time: an analytical first step makes no model call")


def _validate_step(i: int, step: Step, *, last: bool, to_data: bool) -> None:
    where = f"steps[{i}]"
    if step.model_time is not None and not math.isfinite(step.model_time):
        raise ScheduleError(f"{where}.model_time: {step.model_time} is not finite")
    if not isinstance(step.order, int) or isinstance(step.order, bool) or not 1 <= step.order <= MAX_ORDER:
        raise ScheduleError(f"{where}.order: {step.order!r} is not an integer in 1..{MAX_ORDER}")
    if step.order > i + 1:
        raise ScheduleError(f"{where}.order: {step.order} needs {step.order - 1} earlier points; step {i} has {i}")
    if len(step.derivatives) != step.order - 1:
        raise ScheduleError(
            f"{where}.derivatives: order {step.order} needs {step.order - 1} derivative estimators, "
            f"got {len(step.derivatives)}"
        )
    for k, der in enumerate(step.derivatives, start=1):
        dwhere = f"{where}.derivatives[{k - 1}]"
        points = der.active_points
        if len(points) < k or len(set(points)) != len(points):
            raise ScheduleError(f"{dwhere}.active_points: derivative {k} needs {k} distinct points, got {list(points)}")
        for p in points:
            if not isinstance(p, int) or isinstance(p, bool) or not -i <= p <= -1:
                raise ScheduleError(f"{dwhere}.active_points: {p!r} is not an earlier point (−1 … −{i})")
        if not math.isfinite(der.relaxation):
            raise ScheduleError(f"{dwhere}.relaxation: {der.relaxation} is not finite")
    if last and step.corrector is not Corrector.NONE:
        raise ScheduleError(f"{where}.corrector: the last step cannot be corrected (got {step.corrector.value!r})")
    if step.estimator is Estimator.FREE:
        corrected = step.corrector is not Corrector.NONE
        for name, pairs, points in (("weights", step.weights, step.points),
                                    ("corrector_weights", step.corrector_weights, (*step.points, 1) if corrected else ())):
            if tuple(j for j, _ in pairs) != points:
                raise ScheduleError(f"{where}.{name}: a free step{' with a corrector' if corrected else ''} needs one "
                                    f"weight per point {list(points)} in that order, got points {[j for j, _ in pairs]}")
            for j, w in pairs:
                if not math.isfinite(w):
                    raise ScheduleError(f"{where}.{name}: the weight on point {j} is not finite ({w})")
    elif step.weights or step.corrector_weights:
        raise ScheduleError(f"{where}.weights: only 'free' steps carry weights (estimator {step.estimator.value!r})")
    if step.estimator is Estimator.IPNDM:
        if step.prediction is not Prediction.NOISE:
            raise ScheduleError(f"{where}.estimator: 'ipndm' integrates noise predictions only")
        if step.corrector is not Corrector.NONE:
            raise ScheduleError(f"{where}.corrector: 'ipndm' steps take no corrector")
        if step.derivatives != default_derivatives(step.order):
            raise ScheduleError(f"{where}.derivatives: 'ipndm' uses the most recent points only")
    elif to_data and step.order != 1 and step.estimator is not Estimator.FREE:
        raise ScheduleError(f"{where}.order: a step to the data (σ = 0) must be first order, got {step.order}")


# -- JSON helpers -------------------------------------------------------------------------


def _step_to_dict(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"prediction": step.prediction.value, "order": step.order}
    if step.derivatives != default_derivatives(step.order):
        out["derivatives"] = [
            {"active_points": list(d.active_points), **({"relaxation": d.relaxation} if d.relaxation != 1.0 else {})}
            for d in step.derivatives
        ]
    out["corrector"] = step.corrector.value
    if step.estimator is not Estimator.TAYLOR:
        out["estimator"] = step.estimator.value
    if step.weights:
        out["weights"] = [[j, w] for j, w in step.weights]
    if step.corrector_weights:
        out["corrector_weights"] = [[j, w] for j, w in step.corrector_weights]
    if step.model_time is not None:
        out["model_time"] = step.model_time
    return out


def _enum(kind: type[StrEnum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(repr(m.value) for m in kind)
        raise ScheduleError(f"{where}: unknown value {value!r} (known: {known})") from None


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise ScheduleError(message)


def _number(value: Any, where: str) -> float:
    _expect(isinstance(value, int | float) and not isinstance(value, bool), f"{where}: {value!r} is not a number")
    return float(value)


def _int(value: Any, where: str) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer")
    return int(value)


_STEP_KEYS = {"prediction", "order", "derivatives", "corrector", "estimator", "weights", "corrector_weights", "model_time"}
_TOP_KEYS = {"format", "time_domain", "timesteps", "steps", "analytic_first_step", "nfe", "guidance_scale", "provenance"}


def _derivative_from(data: Any, where: str) -> Derivative:
    _expect(isinstance(data, Mapping), f"{where}: expected an object, got {type(data).__name__}")
    unknown = set(data) - {"active_points", "relaxation"}
    if unknown:
        raise ScheduleError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    _expect("active_points" in data, f"{where}.active_points: missing")
    pts = data["active_points"]
    _expect(isinstance(pts, Sequence) and not isinstance(pts, str), f"{where}.active_points: expected a list")
    points = tuple(_int(p, f"{where}.active_points") for p in pts)
    return Derivative(points, _number(data.get("relaxation", 1.0), f"{where}.relaxation"))


def _step_from(data: Any, where: str, version: str) -> Step:
    _expect(isinstance(data, Mapping), f"{where}: expected an object, got {type(data).__name__}")
    unknown = set(data) - _STEP_KEYS
    if unknown:
        raise ScheduleError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    order = _int(data.get("order", 1), f"{where}.order")
    _expect(1 <= order <= MAX_ORDER, f"{where}.order: {order} is not in 1..{MAX_ORDER}")
    ders: tuple[Derivative, ...] = ()
    if "derivatives" in data:
        raw = data["derivatives"]
        _expect(isinstance(raw, Sequence) and not isinstance(raw, str), f"{where}.derivatives: expected a list")
        ders = tuple(_derivative_from(d, f"{where}.derivatives[{k}]") for k, d in enumerate(raw))
        _expect(
            len(ders) == order - 1,
            f"{where}.derivatives: order {order} needs {order - 1} derivative estimators, got {len(ders)}",
        )
    weights = _weights_from(data, "weights", where, version)
    corrector_weights = _weights_from(data, "corrector_weights", where, version)
    estimator = _enum(Estimator, data.get("estimator", "taylor"), f"{where}.estimator")
    _expect(estimator is not Estimator.FREE or version == FORMAT_V2,
            f"{where}.estimator: 'free' steps need format {FORMAT_V2!r}")
    model_time = None
    if "model_time" in data:
        _expect(version == FORMAT_V2, f"{where}.model_time: model times need format {FORMAT_V2!r}")
        model_time = _number(data["model_time"], f"{where}.model_time")
    return Step(
        prediction=_enum(Prediction, data.get("prediction", "data"), f"{where}.prediction"),
        order=order,
        derivatives=ders,
        corrector=_enum(Corrector, data.get("corrector", "none"), f"{where}.corrector"),
        estimator=estimator,
        weights=weights,
        corrector_weights=corrector_weights,
        model_time=model_time,
    )


def _weights_from(data: Mapping[str, Any], key: str, where: str, version: str) -> tuple[tuple[int, float], ...]:
    if key not in data:
        return ()
    _expect(version == FORMAT_V2, f"{where}.{key}: free weights need format {FORMAT_V2!r}")
    raw = data[key]
    _expect(isinstance(raw, Sequence) and not isinstance(raw, str), f"{where}.{key}: expected a list")
    pairs = []
    for k, pair in enumerate(raw):
        _expect(isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2,
                f"{where}.{key}[{k}]: expected [point offset, weight]")
        pairs.append((_int(pair[0], f"{where}.{key}[{k}]"), _number(pair[1], f"{where}.{key}[{k}]")))
    return tuple(pairs)


def _from_dict(data: Any) -> Schedule:
    _expect(isinstance(data, Mapping), f"schedule: expected a JSON object, got {type(data).__name__}")
    version = data.get("format")
    _expect(version in FORMATS, f"format: expected {' or '.join(map(repr, FORMATS))}, got {version!r}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ScheduleError(f"schedule: unknown field {sorted(unknown)[0]!r}")
    for key in ("time_domain", "timesteps", "steps"):
        _expect(key in data, f"{key}: missing")
    times = data["timesteps"]
    _expect(isinstance(times, Sequence) and not isinstance(times, str), "timesteps: expected a list of numbers")
    timesteps = tuple(_number(t, f"timesteps[{i}]") for i, t in enumerate(times))
    steps_raw = data["steps"]
    _expect(isinstance(steps_raw, Sequence) and not isinstance(steps_raw, str), "steps: expected a list")
    steps = tuple(_step_from(s, f"steps[{i}]", str(version)) for i, s in enumerate(steps_raw))
    first = data.get("analytic_first_step")
    gs = data.get("guidance_scale")
    provenance = data.get("provenance", {})
    _expect(isinstance(provenance, Mapping), "provenance: expected an object")
    schedule = Schedule(
        time_domain=str(data["time_domain"]),
        timesteps=timesteps,
        steps=steps,
        analytic_first_step=None if first is None else _enum(AnalyticFirstStep, first, "analytic_first_step"),
        guidance_scale=None if gs is None else _number(gs, "guidance_scale"),
        provenance=dict(provenance),
    )
    if "nfe" in data:
        nfe = _int(data["nfe"], "nfe")
        _expect(nfe == schedule.nfe, f"nfe: the file says {nfe} but its steps make {schedule.nfe} model evaluations")
    return schedule
