"""Learned refinement: gradient descent on a schedule's times and coefficients against a teacher.

The discrete search picks the structure (orders, predictions, estimators, correctors);
refinement tunes its numbers (:class:`~schedsearch.solvers.parameters.ScheduleParameters`).
The teacher is the model's reference solve (DPM-Solver++ 3M, 100 steps) of a *training*
noise set, drawn from its own seed, apart from the search and the held-out noise. The loss
is the mean squared distance between the few-step output and the teacher (LD3, S4S), plus a
distance in image features where the model has a differentiable feature network. Adam; a
validation split of the training noises keeps the best iterate, and on a plateau refinement
returns to it with smaller steps (large steps first, then finer ones: one setting serves
schedules far from and near their optimum), stopping after a few such cuts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from schedsearch.solvers import DiffusionModel, Schedule, SolverError, baseline
from schedsearch.solvers.parameters import RefineTargets, ScheduleParameters
from schedsearch.solvers.sampler import integrate

from .refine_defaults import DISTANCES, LEARNABLE, REFINE_DEFAULTS, TRAIN_SEED, Distance
from .metrics.quality import ReferenceDistance
from .metrics.suite import REFERENCE_STEPS
from .noise_set import NoiseSet



@dataclass(frozen=True)
class RefineSettings:
    """How to refine: the training noise, the optimiser and what to learn."""

    iterations: int = REFINE_DEFAULTS["iterations"]
    samples: int = REFINE_DEFAULTS["samples"]
    validation: float = 0.25
    batch_size: int = REFINE_DEFAULTS["batch_size"]
    seed: int = TRAIN_SEED
    lr_times: float = REFINE_DEFAULTS["lr_times"]
    lr_coefficients: float = REFINE_DEFAULTS["lr_coefficients"]
    eval_every: int = 10
    patience: int = REFINE_DEFAULTS["patience"]
    teacher_steps: int = REFERENCE_STEPS
    feature_weight: float = 0.0
    distance: Distance = REFINE_DEFAULTS["distance"]
    guidance_scale: float | None = None
    targets: RefineTargets = field(default_factory=RefineTargets)
    cache_root: Path | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.iterations >= 1, f"iterations: {self.iterations} must be at least 1"),
            (self.samples >= 4, f"samples: {self.samples} must be at least 4"),
            (0.0 < self.validation < 1.0, f"validation: {self.validation} must be a share in (0, 1)"),
            (self.batch_size >= 1, f"batch_size: {self.batch_size} must be at least 1"),
            (self.lr_times > 0 and self.lr_coefficients > 0, "learning rates must be positive"),
            (self.eval_every >= 1 and self.patience >= 1, "eval_every and patience must be at least 1"),
            (self.teacher_steps >= 10, f"teacher_steps: {self.teacher_steps} must be at least 10"),
            (self.feature_weight >= 0, f"feature_weight: {self.feature_weight} must not be negative"),
            (self.distance in DISTANCES, f"distance: {self.distance!r} must be one of {', '.join(DISTANCES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class RefineResult:
    """The refined schedule and how it got there (losses are validation losses unless named train)."""

    schedule: Schedule
    initial_loss: float
    loss: float
    train_loss: float
    iterations: int
    best_iteration: int
    seconds: float
    history: tuple[tuple[int, float, float], ...]  # (iteration, train loss, validation loss)

    @property
    def improvement(self) -> float:
        """Validation loss after / before (below 1: better)."""
        return self.loss / self.initial_loss if self.initial_loss > 0 else 1.0


Progress = Callable[[int, float, float | None], None]

#: on a plateau (``patience`` validations without a better iterate, or a divergence) refinement returns to its
#: best iterate and goes on with steps CUT times as large, at most MAX_CUTS times; then it stops
CUT = 0.3
MAX_CUTS = 3


#: teachers already solved, by (training seed, draws, guidance scale, teacher steps): a worker that refines
#: several schedules solves each training set once
TeacherCache = dict[tuple[int, int, float | None, int], tuple[NoiseSet, torch.Tensor]]


def teacher(model: DiffusionModel, noises: NoiseSet, settings: RefineSettings, guidance_scale: float | None) -> torch.Tensor:
    """The reference solve of ``noises`` (cached on disk under ``settings.cache_root`` like ``ref_rmse``'s)."""
    reference = ReferenceDistance(model, baseline("dpmpp_3m", settings.teacher_steps, model), guidance_scale,
                                  batch_size=max(settings.batch_size, 250), cache_root=settings.cache_root)
    return reference.solution(noises)


def training_set(model: DiffusionModel, settings: RefineSettings, guidance_scale: float | None,
                 cache: TeacherCache | None = None) -> tuple[NoiseSet, torch.Tensor]:
    """The training noises (their own seed) and the teacher's solution of them."""
    key = (settings.seed, settings.samples, guidance_scale, settings.teacher_steps)
    if cache is not None and key in cache:
        return cache[key]
    noises = NoiseSet.draw(model.sample_shape, settings.samples, settings.seed, model.num_classes,
                           dtype=model.state_dtype)
    pair = (noises, teacher(model, noises, settings, guidance_scale))
    if cache is not None:
        cache[key] = pair
    return pair


def refine(
    model: DiffusionModel,
    schedule: Schedule,
    settings: RefineSettings = RefineSettings(),
    progress: Progress | None = None,
    cache: TeacherCache | None = None,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RefineResult:
    """Refine ``schedule`` for ``model``; ``progress(iteration, train_loss, validation_loss or None)`` is called
    after every iteration; ``cache`` keeps the teacher for the next refinement; ``features`` maps samples to
    a feature space (a differentiable image network) for ``settings.feature_weight``. Raises
    :class:`~schedsearch.solvers.ScheduleError` when the schedule does not fit the model (or the learned times
    collapse).

    The loss L2 is the distance to the teacher averaged over draws: each draw's euclidean distance
    (``distance="euclidean"``, which a few draws no schedule brings near their teacher cannot dominate) or
    its square per coordinate (``"squared"``, the mean squared error). With a feature weight w it is
    L2 / L2₀ + w · F / F₀, F the mean squared distance of the features and ₀ the values at the start on
    the validation split (so w weighs the two terms as shares of where they started)."""
    start = time.perf_counter()
    if settings.feature_weight > 0 and features is None:
        raise ValueError("feature_weight: this model has no image feature network to measure distances in")
    scale = schedule.guidance_scale if settings.guidance_scale is None else settings.guidance_scale
    params = ScheduleParameters(schedule, model.noise_schedule, settings.targets)
    noises, target = training_set(model, settings, scale, cache)
    n_val = max(1, int(round(settings.samples * settings.validation)))
    train = torch.arange(n_val, settings.samples)
    val = torch.arange(n_val)
    use_features = settings.feature_weight > 0 and features is not None
    target_features = None
    if use_features:
        with torch.no_grad():
            target_features = torch.cat([features(chunk) for chunk in target.split(250)])
    norms = (1.0, 1.0)

    def terms(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        labels = None if noises.labels is None else noises.labels[index]
        out = integrate(model, params.plan(), noises.noise[index], labels, scale)
        sq = ((out - target[index].to(out)) ** 2).flatten(1)
        l2 = sq.mean() if settings.distance == "squared" else (sq.sum(1) + 1e-12).sqrt().mean()
        if target_features is None or features is None:
            return l2, None
        f = features(out.to(target.dtype))
        return l2, ((f - target_features[index].to(f)) ** 2).mean()

    def combine(l2: torch.Tensor, feat: torch.Tensor | None) -> torch.Tensor:
        if feat is None:
            return l2
        return l2 / norms[0] + settings.feature_weight * feat / norms[1]

    def loss_on(index: torch.Tensor) -> torch.Tensor:
        return combine(*terms(index))

    def validation_terms() -> tuple[float, float]:
        with torch.no_grad():
            l2_sum, feat_sum = 0.0, 0.0
            for chunk in val.split(max(settings.batch_size, 250)):
                l2, feat = terms(chunk)
                l2_sum += float(l2) * len(chunk)
                feat_sum += (0.0 if feat is None else float(feat)) * len(chunk)
            return l2_sum / len(val), feat_sum / len(val)

    def validate() -> float:
        l2, feat = validation_terms()
        return float(combine(torch.tensor(l2), torch.tensor(feat) if use_features else None))

    if use_features:
        l2_0, feat_0 = validation_terms()
        norms = (max(l2_0, 1e-30), max(feat_0, 1e-30))

    generator = torch.Generator().manual_seed(settings.seed)
    initial = best = validate()
    best_state = {k: v.detach().clone() for k, v in params.state_dict().items()}
    best_iteration, train_loss, done, stale, lr_scale, best_scale, cuts = 0, math.nan, 0, 0, 1.0, 1.0, 0
    history: list[tuple[int, float, float]] = [(0, math.nan, initial)]

    def optimizer_at(scale: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params.groups(settings.lr_times * scale, settings.lr_coefficients * scale))

    optimizer = optimizer_at(lr_scale)
    for iteration in range(1, settings.iterations + 1):
        batch = train[torch.randperm(len(train), generator=generator)[: settings.batch_size]]
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = loss_on(batch)
        except SolverError:  # the times left the model's range (a point at σ = 0): as a divergence
            loss = torch.tensor(math.nan)
        diverged = not torch.isfinite(loss)
        if not diverged:
            loss.backward()
            optimizer.step()
            train_loss = loss.item()
        done = iteration
        val_loss = None
        if diverged or iteration % settings.eval_every == 0 or iteration == settings.iterations:
            try:
                val_loss = math.inf if diverged else validate()
            except SolverError:
                val_loss = math.inf
            history.append((iteration, train_loss, val_loss))
            if math.isfinite(val_loss) and val_loss < best:
                best, best_iteration, stale, best_scale = val_loss, iteration, 0, lr_scale
                best_state = {k: v.detach().clone() for k, v in params.state_dict().items()}
            else:
                stale += 1
        if progress is not None:
            progress(iteration, train_loss, val_loss)
        if diverged or stale >= settings.patience:  # on a plateau: back to the best iterate, smaller steps
            if cuts == MAX_CUTS:
                break
            cuts, stale, lr_scale = cuts + 1, 0, lr_scale * CUT
            params.load_state_dict(best_state)
            optimizer = optimizer_at(lr_scale)
    params.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    refined = params.to_schedule(refined={
        "from": schedule.provenance.get("baseline") or schedule.provenance.get("name") or schedule.canonical_hash()[:12],
        "teacher": f"dpmpp_3m/{settings.teacher_steps}", "train_seed": settings.seed,
        "distance": settings.distance, **({"feature_weight": settings.feature_weight} if use_features else {}),
        "samples": settings.samples, "iterations": done, "best_iteration": best_iteration, "lr_scale": best_scale,
        "validation_loss": best, "initial_validation_loss": initial,
    })
    if scale != refined.guidance_scale:  # trained for this scale: the schedule says so
        refined = replace(refined, guidance_scale=scale)
    return RefineResult(refined, initial, best, train_loss, done, best_iteration, seconds, tuple(history))


def feature_network(model: DiffusionModel, extractor: str | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The differentiable image features refinement can compare samples in: the bundled digits classifier's
    penultimate layer (the digits FID extractor) for the digits model when no other extractor is chosen;
    None for every other model (their extractors take quantised images, which stop gradients)."""
    if not model.info.get("digits") or extractor is not None:
        return None
    from schedsearch.solvers.digits import load_digits_classifier

    net = load_digits_classifier(device=model.device)

    def features(x: torch.Tensor) -> torch.Tensor:
        return net.features(x.to(torch.float32).clamp(-1.0, 1.0))

    return features


def resolve_feature_weight(weight: float | None, features: object | None) -> float:
    """``None`` (the default): 1 where the model has a feature network, else 0; an explicit weight on a model
    without one is an error."""
    if weight is None:
        return DEFAULT_FEATURE_WEIGHT if features is not None else 0.0
    if weight > 0 and features is None:
        raise ValueError(f"feature_weight: {weight:g}, but this model has no image feature network to compare in "
                         "(refinement uses the bundled digits classifier's; other models learn from the L2 term)")
    return weight


#: the feature term's weight where a model has a feature network (measured on digits: see benchmarks/refine.py)
DEFAULT_FEATURE_WEIGHT = 1.0

#: what a search config's ``refine:`` section may set (the rest of :class:`RefineSettings` comes from the search)
OPTION_KEYS = ("iterations", "samples", "batch_size", "seed", "lr_times", "lr_coefficients", "learn",
               "feature_weight", "distance")


def settings_from_options(options: dict[str, Any], guidance_scale: float | None, teacher_steps: int,
                          cache_root: Path | None, features: object | None = None) -> RefineSettings:
    """The settings of a search's refinement job (``options``: the config's ``refine`` values; ``features``:
    the model's feature network, which decides the default feature weight)."""
    learn = set(options.get("learn", LEARNABLE))
    targets = RefineTargets(**{what: what in learn for what in LEARNABLE})
    values = {k: options[k] for k in OPTION_KEYS if k in options and k not in ("learn", "feature_weight")}
    weight = resolve_feature_weight(options.get("feature_weight"), features)
    return RefineSettings(**values, teacher_steps=teacher_steps, guidance_scale=guidance_scale, targets=targets,
                          cache_root=cache_root, feature_weight=weight)


def refine_output(model: DiffusionModel, schedule: dict[str, Any], settings: RefineSettings,
                  cache: TeacherCache | None = None, progress: Progress | None = None,
                  features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """A refinement as JSON-able values: the refined schedule and its losses, or ``{"error": reason}``."""
    start = time.perf_counter()
    try:
        result = refine(model, Schedule.from_dict(schedule), settings, progress, cache, features)
    except (SolverError, ValueError) as exc:
        return {"error": f"refinement failed: {exc}", "seconds": time.perf_counter() - start}

    def number(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {"schedule": result.schedule.to_dict(), "initial_loss": number(result.initial_loss),
            "loss": number(result.loss), "train_loss": number(result.train_loss), "iterations": result.iterations,
            "best_iteration": result.best_iteration, "seconds": result.seconds}
