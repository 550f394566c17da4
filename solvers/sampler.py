"""One executor for every schedule: ``sample(model, schedule, noise)``.

The loop makes exactly ``schedule.nfe`` model calls, batched, on the model's device.
Point i is the model's prediction at t_i; a pseudo corrector of step i re-uses the
prediction at t_{i+1} made from the uncorrected x_{i+1} (UniC), an implicit corrector
evaluates the model once more at the corrected point.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .coefficients import Update
from .errors import SolverError
from .models import DiffusionModel, Predictions
from .plan import Plan, compile_plan
from .schedule import Corrector, Prediction, Schedule


def apply_update(update: Update, x: torch.Tensor, points: dict[int, Predictions]) -> torch.Tensor:
    """ratio·x + Σ w_j·y_j with y the update's prediction kind (out of place where a weight is a tensor)."""
    out = x * update.ratio
    data = update.prediction is Prediction.DATA
    for j, w in update.weights:
        y = points[j].data if data else points[j].noise
        out = out + w * y if isinstance(w, torch.Tensor) else out.add_(y, alpha=w)
    return out


def _to_device(cond: Any, device: torch.device) -> Any:
    if isinstance(cond, torch.Tensor):
        return cond.to(device)
    if isinstance(cond, dict):
        return {k: _to_device(v, device) for k, v in cond.items()}
    return cond


@torch.inference_mode()
def sample(
    model: DiffusionModel,
    schedule: Schedule,
    noise: torch.Tensor,
    cond: Any = None,
    guidance_scale: float | None = None,
    plan: Plan | None = None,
) -> torch.Tensor:
    """Run ``schedule`` from the initial ``noise`` (x at t₀) and return x at t_N.

    ``guidance_scale`` defaults to the schedule's own; ``plan`` may be passed to skip
    compiling the same schedule again.
    """
    if plan is None:
        plan = compile_plan(schedule, model.noise_schedule)
    return integrate(model, plan, noise, cond, schedule.guidance_scale if guidance_scale is None else guidance_scale)


def integrate(model: DiffusionModel, plan: Plan, noise: torch.Tensor, cond: Any = None,
              guidance_scale: float | None = None) -> torch.Tensor:
    """The executor: ``plan`` from ``noise`` at t₀ to x at t_N, ``plan.nfe`` model calls.

    Differentiable when called outside inference mode with a :func:`differentiable_plan`:
    gradients then reach the plan's times and coefficients (and ``noise``).
    """
    if tuple(noise.shape[1:]) != tuple(model.sample_shape):
        raise SolverError(f"noise: shape {tuple(noise.shape)} does not match the model's (N, {model.sample_shape})")
    scale = guidance_scale
    if scale is not None and not math.isfinite(scale):
        raise SolverError(f"guidance_scale: {scale} is not finite")
    if not torch.isfinite(noise).all():
        raise SolverError("noise: contains NaN or inf values")
    x = noise.to(device=model.device, dtype=model.state_dtype)
    cond = _to_device(cond, model.device)
    points: dict[int, Predictions] = {}
    x_prev = x
    for i, sp in enumerate(plan.steps):
        node = sp.node
        if i == 0 and plan.analytic_first_step is not None:
            pred = model.analytic(x, node.alpha, node.sigma, plan.analytic_first_step.value)
        else:
            pred = model.predict(x, sp.time, node.alpha, node.sigma, cond, scale)
        corrected = correct(plan, i, pred, x_prev, points)
        if corrected is not None:
            x = corrected
            if plan.steps[i - 1].corrector_kind is Corrector.IMPLICIT:
                pred = model.predict(x, sp.time, node.alpha, node.sigma, cond, scale)
        x_prev = x
        x = advance(plan, i, pred, x, points)
    return x


def correct(plan: Plan, i: int, pred: Predictions, x_prev: torch.Tensor,
            points: dict[int, Predictions]) -> torch.Tensor | None:
    """x_i corrected by step i−1's corrector with point i's predictions (made from the uncorrected x_i);
    None when step i−1 has no corrector. ``x_prev`` is x_{i−1}."""
    if i == 0 or plan.steps[i - 1].corrector is None:
        return None
    points[i] = pred
    return apply_update(plan.steps[i - 1].corrector, x_prev, points)  # type: ignore[arg-type]


def advance(plan: Plan, i: int, pred: Predictions, x: torch.Tensor, points: dict[int, Predictions]) -> torch.Tensor:
    """Record point i's predictions, free the points no later update reads, and take step i's predictor from x."""
    points[i] = pred
    for j in [j for j in points if plan.last_use[j] < i]:
        del points[j]
    return apply_update(plan.steps[i].predictor, x, points)
