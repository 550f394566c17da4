"""What a worker needs to measure schedules, built once per worker from a JSON-able spec.

The driver never ships models or tensors to workers: each worker (in-process, or a Ray
actor on any node) builds the model, the two fixed noise sets (search and held-out) and the
metrics from an :class:`EvaluationSpec`, keeps them, and evaluates jobs by trial number.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from schedsearch.solvers import DiffusionModel, Schedule, load_model

from .evaluator import EvalResult, SampleEvaluator
from .metrics.suite import REFERENCE_STEPS, lean_metrics, metric_suite
from .noise_set import NoiseSet

SEARCH_NOISE = "search"
HOLDOUT_NOISE = "holdout"


@dataclass(frozen=True)
class EvaluationSpec:
    """How to build the evaluators of one search (everything a worker needs, as plain values)."""

    model: str
    objective: str | None = None  # None: the model's natural metric (fid / mmd / ref_rmse)
    guidance_scale: float | None = None
    search_seed: int = 0
    search_samples: int = 1000
    holdout_seed: int = 1
    holdout_samples: int = 2000
    device: str | None = None
    reference: str | None = None
    extractor: str | None = None
    extractor_weights: str | None = None
    cache_dir: str | None = None
    reference_steps: int = REFERENCE_STEPS
    batch_size: int = 1000
    threads: int | None = None
    prompts: tuple[str, ...] | None = None
    negative_prompt: str | None = None
    clip_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationSpec:
        data = dict(data)
        if data.get("prompts") is not None:
            data["prompts"] = tuple(data["prompts"])
        return cls(**data)


@dataclass
class EvaluationContext:
    """The model and one evaluator per noise set, built once."""

    spec: EvaluationSpec
    model: DiffusionModel
    evaluators: dict[str, SampleEvaluator]
    teachers: dict[Any, Any] = field(default_factory=dict, repr=False)  # refinement's training sets, solved once
    image_features: list[Any] = field(default_factory=list, repr=False)  # refinement's feature network, loaded once

    @property
    def objective(self) -> str:
        return self.evaluators[SEARCH_NOISE].objective

    def evaluate(self, schedule: Schedule | dict[str, Any], num_samples: int, noise: str = SEARCH_NOISE) -> EvalResult:
        if not isinstance(schedule, Schedule):
            try:
                schedule = Schedule.from_dict(schedule)
            except ValueError as exc:
                return EvalResult({}, None, num_samples, 0.0, f"illegal schedule: {exc}")
        return self.evaluators[noise].evaluate(schedule, num_samples)

    def evaluate_progressive(self, schedule: Schedule | dict[str, Any], rungs: Sequence[int],
                             noise: str = SEARCH_NOISE) -> Iterator[EvalResult]:
        """Results at the growing sample counts ``rungs`` (see :meth:`SampleEvaluator.evaluate_progressive`)."""
        if not isinstance(schedule, Schedule):
            try:
                schedule = Schedule.from_dict(schedule)
            except ValueError as exc:
                yield EvalResult({}, None, rungs[0], 0.0, f"illegal schedule: {exc}")
                return
        yield from self.evaluators[noise].evaluate_progressive(schedule, rungs)

    def refine(self, schedule: dict[str, Any], options: dict[str, Any],
               progress: Callable[[int, float, float | None], None] | None = None) -> dict[str, Any]:
        """Refine ``schedule`` against the teacher (the search's reference solver on a training noise set);
        ``options``: the config's ``refine`` values; ``progress(iteration, train loss, validation loss or None)``.
        The refined schedule JSON and its losses, or an error."""
        from .refine import feature_network, refine_output, settings_from_options

        cache = Path(os.path.expanduser(self.spec.cache_dir)) if self.spec.cache_dir else None
        if not self.image_features:
            self.image_features.append(feature_network(self.model, self.spec.extractor))
        features = self.image_features[0]
        try:
            settings = settings_from_options(options, self.spec.guidance_scale, self.spec.reference_steps, cache,
                                             features)
        except ValueError as exc:
            return {"error": f"refinement settings: {exc}", "seconds": 0.0}
        return refine_output(self.model, schedule, settings, self.teachers, progress,
                             features if settings.feature_weight > 0 else None)

    def info(self) -> dict[str, Any]:
        """The objective, every metric name and the noise sets' content hashes."""
        names = sorted(self.evaluators[HOLDOUT_NOISE].metric_names)
        return {"objective": self.objective, "metrics": names,
                "fingerprints": {name: ev.noises.fingerprint for name, ev in self.evaluators.items()}}

    def floor(self) -> dict[str, float]:
        """Every metric of the reference solve itself (the model's high-NFE floor) on the held-out noise."""
        evaluator = self.evaluators[HOLDOUT_NOISE]
        reference = next(m for m in evaluator.metrics if hasattr(m, "solution"))
        samples = reference.solution(evaluator.noises)  # type: ignore[attr-defined]
        values: dict[str, float] = {}
        for metric in evaluator.metrics:
            values.update(metric(samples, evaluator.noises))
        return values


def build_context(spec: EvaluationSpec) -> EvaluationContext:
    """Load the model, draw both noise sets and set up the metrics (raises the loaders' clear errors)."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    model = load_model(spec.model, device=spec.device)
    if spec.prompts is not None or spec.negative_prompt is not None:
        from schedsearch.solvers.pipelines import with_prompts

        model = with_prompts(model, spec.prompts or ("",), spec.negative_prompt)  # encoded once per worker
    reference_images = None
    if spec.reference:
        from .metrics.reference_data import load_reference_images

        reference_images = load_reference_images(spec.reference, model.image_shape)
    cache = Path(os.path.expanduser(spec.cache_dir)) if spec.cache_dir else None
    weights = Path(os.path.expanduser(spec.extractor_weights)) if spec.extractor_weights else None
    clip = Path(os.path.expanduser(spec.clip_model)) if spec.clip_model else None
    metrics, natural = metric_suite(model, spec.guidance_scale, reference_images, cache, spec.extractor, weights,
                                    spec.reference_steps, clip_model=clip)
    objective = spec.objective or natural
    evaluators = {}
    for name, seed, n, used in ((SEARCH_NOISE, spec.search_seed, spec.search_samples, lean_metrics(metrics, objective)),
                                (HOLDOUT_NOISE, spec.holdout_seed, spec.holdout_samples, metrics)):
        noises = NoiseSet.draw(model.sample_shape, n, seed, model.num_classes, dtype=model.state_dtype)
        evaluators[name] = SampleEvaluator(model, noises, used, objective, guidance_scale=spec.guidance_scale,
                                           batch_size=spec.batch_size)
    return EvaluationContext(spec, model, evaluators)
