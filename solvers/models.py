"""Model adapters: any network + its parameterisation + its noise schedule → x̂₀ and ε̂.

The network is a callable ``(x, t, cond) → output`` taking a batch of times in the
model's own time domain (diffusers timesteps, continuous t, EDM σ, flow t).
Classifier-free guidance lives here: conditional and unconditional branches run as one
batched call, which counts as one model evaluation.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from .errors import SolverError
from .noise_schedules import NoiseSchedule

Network = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class Parameterization(StrEnum):
    """What the network outputs. ``edm`` is a denoiser D(x; σ) (x̂₀ with α = 1)."""

    EPS = "eps"
    X0 = "x0"
    V = "v"
    FLOW = "flow"
    EDM = "edm"

    @classmethod
    def from_diffusers(cls, prediction_type: str) -> Parameterization:
        table = {"epsilon": cls.EPS, "sample": cls.X0, "v_prediction": cls.V, "flow_prediction": cls.FLOW}
        if prediction_type not in table:
            raise SolverError(f"prediction_type: unknown {prediction_type!r} (known: {', '.join(table)})")
        return table[prediction_type]


@dataclass(frozen=True)
class Predictions:
    """x̂₀ and ε̂ at one point, consistent with the x they were computed from."""

    data: torch.Tensor
    noise: torch.Tensor


@dataclass(frozen=True, eq=False)
class DiffusionModel:
    """A diffusion model seen by the sampler.

    ``uncond`` is the conditioning of the unconditional branch for classifier-free
    guidance (a null class label, empty-prompt embeddings, the negative prompt's row, …);
    ``data_mean`` is used by the analytical first step ``mean``.
    """

    network: Network
    parameterization: Parameterization
    noise_schedule: NoiseSchedule
    sample_shape: tuple[int, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    uncond: Any = None
    data_mean: torch.Tensor | float | None = None
    name: str = "model"
    info: Mapping[str, Any] = field(default_factory=dict)
    #: latent models: final latents → images in [−1, 1] (None: samples are the data themselves)
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: text models: (prompts, negative prompt) → their conditioning (see ``pipelines.with_prompts``)
    prompt_encoder: Callable[..., tuple[Any, Any]] | None = None

    @property
    def num_classes(self) -> int | None:
        """Class labels a user may request: the class embeddings less the null class (None: not class-conditional)."""
        embeds = self.info.get("num_class_embeds")
        if not embeds:
            return None
        return embeds - 1 if self.uncond is not None else embeds

    @property
    def latent(self) -> bool:
        """True when samples are latents that :attr:`decoder` turns into images."""
        return self.decoder is not None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one image: the decoded one of a latent model, else the sample's."""
        return tuple(self.info.get("image_shape", self.sample_shape))

    def fingerprint(self) -> str | None:
        """A content hash of the network's weights (and the noise schedule), or None when the network
        is an opaque callable. Keys cached results such as reference solutions."""
        if "fingerprint" in self.info:
            return str(self.info["fingerprint"])
        tensors = _network_tensors(self.network)
        if tensors is None:
            return None
        h = hashlib.sha256(json.dumps(self.noise_schedule.spec(), sort_keys=True, default=str).encode())
        h.update(f"{self.parameterization.value}|{tuple(self.sample_shape)}|{self.dtype}".encode())
        for name, tensor in tensors:
            h.update(name.encode())
            h.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:24]

    @property
    def state_dtype(self) -> torch.dtype:
        """Dtype of the sampler state: at least float32 (fp16/bf16 models are upcast)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def output(self, x: torch.Tensor, t: float | torch.Tensor, cond: Any = None, guidance_scale: float | None = None) -> torch.Tensor:
        """Raw network output at time ``t``, with classifier-free guidance when asked."""
        batch = x.shape[0]
        xin = x.to(self.dtype)
        guided = guidance_scale is not None and guidance_scale != 1.0
        if not guided:
            return self.network(xin, _batch_times(t, batch, x.device, self.dtype), cond).to(x.dtype)
        if self.uncond is None or cond is None:
            raise SolverError("guidance_scale needs conditioning (cond) and a model with an unconditional input (uncond)")
        times = _batch_times(t, 2 * batch, x.device, self.dtype)
        both = self.network(torch.cat([xin, xin]), times, _stack_cond(cond, self.uncond, batch))
        out_c, out_u = both.to(x.dtype).chunk(2)
        return out_u + guidance_scale * (out_c - out_u)

    def predict(
        self, x: torch.Tensor, t: float | torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor,
        cond: Any = None, guidance_scale: float | None = None
    ) -> Predictions:
        """x̂₀ and ε̂ at (x, t), α = α(t), σ = σ(t)."""
        return self.convert(self.output(x, t, cond, guidance_scale), x, alpha, sigma)

    def convert(self, out: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float) -> Predictions:
        return convert_output(self.parameterization, out, x, alpha, sigma)

    def analytic(self, x: torch.Tensor, alpha: float, sigma: float, kind: str) -> Predictions:
        """Predictions of the analytical first step: x̂₀ = 0 or x̂₀ = data mean."""
        return analytic_predictions(x, alpha, sigma, kind, self.data_mean)


def _batch_times(t: float | torch.Tensor, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One time per sample; a tensor ``t`` keeps its gradient (learned refinement)."""
    if isinstance(t, torch.Tensor):
        return t.to(device=device, dtype=dtype).expand(batch)
    return torch.full((batch,), t, device=device, dtype=dtype)


def convert_output(p: Parameterization, out: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float) -> Predictions:
    """x̂₀ and ε̂ from a network output ``out`` of parameterisation ``p`` at x, α, σ."""
    if p is Parameterization.EPS:
        return Predictions((x - sigma * out) / alpha, out)
    if p in (Parameterization.X0, Parameterization.EDM):
        return Predictions(out, (x - alpha * out) / sigma)
    if p is Parameterization.V:  # v = α ε − σ x₀ (VP: α² + σ² = 1)
        return Predictions(alpha * x - sigma * out, sigma * x + alpha * out)
    # flow velocity u = ε − x₀ with x = (1 − t) x₀ + t ε
    return Predictions(x - sigma * out, x + alpha * out)


def analytic_predictions(
    x: torch.Tensor, alpha: float, sigma: float, kind: str, data_mean: torch.Tensor | float | None
) -> Predictions:
    """Predictions of the analytical first step: x̂₀ = 0 or x̂₀ = ``data_mean``."""
    if kind == "mean":
        if data_mean is None:
            raise SolverError("analytic_first_step 'mean' needs the model's data_mean")
        x0 = torch.as_tensor(data_mean, device=x.device, dtype=x.dtype).expand_as(x)
    else:
        x0 = torch.zeros_like(x)
    return Predictions(x0, (x - alpha * x0) / sigma)


def _network_tensors(network: Any) -> list[tuple[str, torch.Tensor]] | None:
    """The tensors that determine a network: its own ``tensors()`` where it has them (a prompted text
    model: the denoiser's weights and the prompt table), a module's state dict (found on ``network`` or its
    ``unet``/``module``/``mixture`` attribute), or None for an opaque callable."""
    if callable(getattr(network, "tensors", None)):
        return network.tensors()
    for holder in (network, getattr(network, "unet", None), getattr(network, "module", None)):
        if isinstance(holder, torch.nn.Module):
            return sorted(holder.state_dict().items())
    mixture = getattr(network, "mixture", None)
    if mixture is not None:
        return [(name, getattr(mixture, name)) for name in ("weights", "means", "stds")]
    return None


def _stack_cond(cond: Any, uncond: Any, batch: int) -> Any:
    """Concatenate conditional and unconditional inputs along the batch (tensors or dicts of them)."""
    if isinstance(cond, Mapping):
        return {k: _stack_cond(v, uncond[k], batch) for k, v in cond.items()}
    cond = torch.as_tensor(cond)
    if cond.dim() == 0:
        cond = cond.expand(batch)
    u = torch.as_tensor(uncond, device=cond.device, dtype=cond.dtype)
    if u.dim() == cond.dim() - 1:
        u = u.unsqueeze(0)
    return torch.cat([cond, u.expand_as(cond)])


def from_callable(
    fn: Network,
    parameterization: Parameterization | str,
    noise_schedule: NoiseSchedule,
    sample_shape: tuple[int, ...],
    **kwargs: Any,
) -> DiffusionModel:
    """Adapter for any torch callable ``fn(x, t, cond)``; each argument is checked here, not at sampling time."""
    if not callable(fn):
        raise TypeError(f"from_callable: fn must be callable (x, t, cond) -> output, got {type(fn).__name__}")
    known = ", ".join(repr(p.value) for p in Parameterization)
    try:
        kind = Parameterization(parameterization)
    except ValueError:
        raise SolverError(f"from_callable: parameterization {parameterization!r} is unknown (known: {known})") from None
    if not isinstance(noise_schedule, NoiseSchedule):
        raise TypeError(
            f"from_callable: noise_schedule must be a NoiseSchedule (e.g. DiscreteVP.from_config({{...}}), "
            f"ContinuousVPLinear(), EDM(), RectifiedFlow()), got {type(noise_schedule).__name__} {noise_schedule!r}"
        )
    try:
        shape = tuple(operator.index(d) for d in sample_shape)
    except (TypeError, ValueError):
        raise TypeError(f"from_callable: sample_shape must be a tuple of sizes, got {sample_shape!r}") from None
    if not shape or any(d < 1 for d in shape):
        raise SolverError(f"from_callable: sample_shape {sample_shape!r} needs at least one size, each at least 1")
    return DiffusionModel(fn, kind, noise_schedule, shape, **kwargs)


class CountingNetwork:
    """Wraps a network and counts its calls (NFE accounting)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.calls += 1
        return self.network(x, t, cond)
