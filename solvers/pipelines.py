"""Latent pipelines → :class:`DiffusionModel`: Stable Diffusion 1.x/2.x, SDXL, DiT, PixArt, SD3.

The sampler sees only the denoiser in latent space. Everything a family needs around it
comes from the pipeline's own components, loaded by diffusers:

- the **network adapter** calls the UNet / transformer the way the family's pipeline does
  (encoder states, pooled embeddings and ``add_time_ids`` for SDXL, attention masks for
  PixArt, ``timestep = σ·1000`` for SD3, the learned-σ half of DiT/PixArt outputs dropped);
- **conditioning is an index**: a text model is prompted with a list of prompts, encoded
  once (by the pipeline's ``encode_prompt``) into a table whose last row is the negative /
  empty prompt; the sampler's ``cond`` is then a row index per sample, exactly like a class
  label, and classifier-free guidance pairs each row with the negative row. Noise sets pair
  latent i with prompt i mod P;
- the **decoder** turns final latents into images in [−1, 1] (VAE), batched by the caller.

A text model loads prompted with the empty prompt, so every command runs on it as is;
:func:`with_prompts` re-prompts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError, SolverError
from .models import DiffusionModel, Parameterization
from .noise_schedules import DiscreteVP, RectifiedFlow

#: pipeline class (model_index.json ``_class_name``) → family
PIPELINES: dict[str, str] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "DiTPipeline": "dit",
    "PixArtAlphaPipeline": "pixart",
    "PixArtSigmaPipeline": "pixart",
    "StableDiffusion3Pipeline": "sd3",
}
#: components a pipeline may list as null or leave out without losing anything the sampler needs
OPTIONAL = {"safety_checker", "feature_extractor", "image_encoder", "text_encoder_3", "tokenizer_3"}


def _tree_map(fn: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return None if tree is None else fn(tree)


def _tree_cat(a: Any, b: Any) -> Any:
    if isinstance(a, Mapping):
        return {k: _tree_cat(a[k], b[k]) for k in a}
    return torch.cat([a, b])


def _tree_tensors(tree: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    if isinstance(tree, Mapping):
        return [item for k in sorted(tree) for item in _tree_tensors(tree[k], f"{prefix}{k}.")]
    return [] if tree is None else [(prefix, tree)]


# ---------------------------------------------------------------------------------------------
# network adapters: (x, t, cond) → the denoiser's output in the model's parameterisation


class _Denoiser:
    """Holds the denoiser as ``module`` (weights fingerprinted) and its latent channel count."""

    def __init__(self, module: torch.nn.Module, channels: int) -> None:
        self.module = module
        self.channels = channels

    def _head(self, out: torch.Tensor) -> torch.Tensor:
        """The prediction channels (DiT/PixArt also output a learned σ in the second half)."""
        return out[:, : self.channels] if out.shape[1] == 2 * self.channels else out


class TextUNet(_Denoiser):
    """SD 1.x/2.x and SDXL UNets: ``cond`` holds ``emb`` (and SDXL's ``pooled``, ``time_ids``)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        added = None
        if "pooled" in cond:
            added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
        return self.module(x, t, encoder_hidden_states=cond["emb"], added_cond_kwargs=added).sample


class ClassTransformer(_Denoiser):
    """DiT: class labels (the null class is the last embedding)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self._head(self.module(x, timestep=t, class_labels=cond).sample)


class PixArtTransformer(_Denoiser):
    """PixArt α/Σ: T5 states with their attention mask; resolution micro-conditions at sample size 128."""

    def __init__(self, module: torch.nn.Module, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__(module, channels)
        self.image_size = image_size

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if self.module.config.sample_size == 128:  # as PixArtAlphaPipeline does
            h, w = self.image_size
            added = {"resolution": torch.tensor([[h, w]], dtype=x.dtype, device=x.device).repeat(len(x), 1),
                     "aspect_ratio": torch.tensor([[h / w]], dtype=x.dtype, device=x.device).repeat(len(x), 1)}
        out = self.module(x, encoder_hidden_states=cond["emb"], encoder_attention_mask=cond["mask"], timestep=t,
                          added_cond_kwargs=added).sample
        return self._head(out)


class FlowTransformer(_Denoiser):
    """SD3's MMDiT: flow time σ ∈ [0, 1] → its timestep σ·T; velocity ε − x₀ out."""

    def __init__(self, module: torch.nn.Module, channels: int, num_train_timesteps: int) -> None:
        super().__init__(module, channels)
        self.scale = float(num_train_timesteps)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.module(hidden_states=x, timestep=t * self.scale, encoder_hidden_states=cond["emb"],
                           pooled_projections=cond["pooled"]).sample


class PromptTable:
    """A text network seen through prompt indices: row i of ``table`` is prompt i, the last row the negative."""

    def __init__(self, base: Callable[..., torch.Tensor], table: Any) -> None:
        self.base = base
        self.table = table
        self.module = getattr(base, "module", None)

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        """What determines this network's outputs (fingerprinted): the denoiser's weights and the table."""
        weights = sorted(self.module.state_dict().items()) if self.module is not None else []
        return weights + [(f"prompt_table.{key}", value) for key, value in _tree_tensors(self.table)]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(cond, device=x.device).long().reshape(-1)
        if index.numel() == 1 and len(x) > 1:
            index = index.expand(len(x))
        return self.base(x, t, _tree_map(lambda v: v.index_select(0, index.to(v.device)), self.table))


# ---------------------------------------------------------------------------------------------
# prompt encoding and decoding, through the pipeline's own methods


@dataclass(frozen=True, eq=False)
class PromptEncoder:
    """prompts, negative prompt → (conditioning of each prompt, conditioning of the negative), as the
    family's pipeline computes them (its ``encode_prompt``; SDXL's ``add_time_ids``)."""

    pipe: Any
    family: str
    image_size: tuple[int, int]

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str], negative: str | None = None) -> tuple[Any, Any]:
        prompts = list(prompts)
        if not prompts:
            raise SolverError("prompts: at least one prompt is needed")
        pipe, device, n = self.pipe, self.pipe._execution_device, len(prompts)
        negatives = None if negative is None else [negative] * n
        if self.family == "sd":
            emb, neg = pipe.encode_prompt(prompts, device, 1, True, negative_prompt=negatives)
            return {"emb": emb}, {"emb": neg[:1]}
        if self.family == "sdxl":
            emb, neg, pooled, neg_pooled = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                                              do_classifier_free_guidance=True,
                                                              negative_prompt=negatives)
            proj = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None \
                else int(pooled.shape[-1])
            ids = pipe._get_add_time_ids(self.image_size, (0, 0), self.image_size, dtype=emb.dtype,
                                         text_encoder_projection_dim=proj).to(device)
            return ({"emb": emb, "pooled": pooled, "time_ids": ids.repeat(n, 1)},
                    {"emb": neg[:1], "pooled": neg_pooled[:1], "time_ids": ids})
        if self.family == "pixart":
            emb, mask, neg, neg_mask = pipe.encode_prompt(prompts, True, negative_prompt=negative or "",
                                                          device=device, clean_caption=False,
                                                          max_sequence_length=self.max_sequence_length)
            return {"emb": emb, "mask": mask}, {"emb": neg[:1], "mask": neg_mask[:1]}
        if self.family == "sd3":
            emb, neg, pooled, neg_pooled = pipe.encode_prompt(prompts, None, None, device=device,
                                                              do_classifier_free_guidance=True,
                                                              negative_prompt=negatives)
            return {"emb": emb, "pooled": pooled}, {"emb": neg[:1], "pooled": neg_pooled[:1]}
        raise SolverError(f"{self.family} models take class labels, not prompts")

    @property
    def max_sequence_length(self) -> int:
        """PixArt-α pads prompts to 120 tokens, PixArt-Σ to 300 (their pipelines' defaults)."""
        return 300 if type(self.pipe).__name__ == "PixArtSigmaPipeline" else 120


@dataclass(frozen=True, eq=False)
class VaeDecoder:
    """Final latents → images in [−1, 1] on the CPU, as the pipeline decodes them (scaling and shift
    factors), ``batch_size`` latents at a time on the VAE's device."""

    vae: torch.nn.Module
    batch_size: int = 16

    @torch.inference_mode()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        param = next(self.vae.parameters())
        shift = getattr(cfg, "shift_factor", None) or 0.0
        out = []
        for start in range(0, len(latents), self.batch_size):
            z = latents[start:start + self.batch_size].to(device=param.device, dtype=param.dtype)
            out.append(self.vae.decode(z / cfg.scaling_factor + shift).sample.float().clamp(-1, 1).cpu())
        return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# loading


def is_latent_pipeline(index: Mapping[str, Any]) -> bool:
    """Whether a ``model_index.json`` names a latent pipeline class loaded here."""
    return index.get("_class_name") in PIPELINES


def check_components(path: Path, index: Mapping[str, Any]) -> None:
    """Every component the index names (and the sampler needs) has its folder."""
    for key, value in index.items():
        if key.startswith("_") or key in OPTIONAL or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is None or value[1] is None:
            if key in ("scheduler", "vae", "unet", "transformer", "text_encoder", "tokenizer"):
                raise ModelLoadError(f"model: {path / 'model_index.json'} lists no {key} (null); "
                                     f"a {index['_class_name']} needs one")
            continue
        if not (path / key).is_dir():
            raise ModelLoadError(f"model: {path} is missing its {key} component ({value[1]}; no {key}/ folder)")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No per-component loading bars from diffusers and transformers while a pipeline loads (their own
    switches, restored after)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def load_pipeline(ref: str | Path, class_name: str, device: Any, dtype: torch.dtype | None, uncond: Any,
                  sidecar: Mapping[str, Any], local_only: bool = True) -> DiffusionModel:
    """Load the latent pipeline ``class_name`` (one of :data:`PIPELINES`; a directory or a hub id) into a
    :class:`DiffusionModel` (see the module docstring)."""
    import diffusers

    name = str(ref)
    family = PIPELINES[class_name]
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kwargs: dict[str, Any] = {"low_cpu_mem_usage": False}
        if dtype is not None:  # diffusers renamed torch_dtype to dtype (0.42); older releases know only torch_dtype
            from diffusers.utils import deprecation_utils

            kwargs["dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"] = dtype
        if family == "sd":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        with quiet_loading():
            pipe = getattr(diffusers, class_name).from_pretrained(name, local_files_only=local_only, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # mismatched shapes, unreadable weights, a tokenizer that does not load, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model: cannot load the {class_name} at {name}: {reason}") from None
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dev)
    if pipe.vae.dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # as the pipelines decode: SDXL's VAE overflows in fp16
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.eval().requires_grad_(False)
    return _assemble(pipe, family, name, sidecar, dev, uncond)


def _assemble(pipe: Any, family: str, name: str, sidecar: Mapping[str, Any], dev: torch.device,
              uncond: Any) -> DiffusionModel:
    denoiser = pipe.unet if family in ("sd", "sdxl") else pipe.transformer
    cfg = denoiser.config
    channels = int(cfg.in_channels)
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size, cfg.sample_size)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    image_size = (int(size[0]) * factor, int(size[1]) * factor)
    sched = dict(pipe.scheduler.config)
    info: dict[str, Any] = {"source": name, "family": family, "pipeline": type(pipe).__name__, "latent": True,
                            "image_shape": (int(pipe.vae.config.out_channels), *image_size)}
    encoder: PromptEncoder | None = None
    if family == "sd3":
        if sched.get("use_dynamic_shifting"):
            raise ModelLoadError(f"model: {name}: its scheduler's use_dynamic_shifting (resolution-dependent "
                                 "shift) is not supported; save the pipeline with a fixed shift")
        T = int(sched.get("num_train_timesteps", 1000))
        shift = float(sched.get("shift", 1.0))
        noise_schedule: Any = RectifiedFlow(t_lo=shift / T / (1 + (shift - 1) / T), shift=shift)
        parameterization = Parameterization.FLOW
        network: Any = FlowTransformer(denoiser, channels, T)
    else:
        noise_schedule = DiscreteVP.from_config(sched)
        parameterization = Parameterization.from_diffusers(sched.get("prediction_type", "epsilon"))
        if family == "dit":
            network = ClassTransformer(denoiser, channels)
            info["num_class_embeds"] = int(cfg.num_embeds_ada_norm) + 1
            if uncond is None:
                uncond = torch.tensor(int(cfg.num_embeds_ada_norm), device=dev)  # DiTPipeline's null class
        elif family == "pixart":
            network = PixArtTransformer(denoiser, channels, image_size)
        else:
            network = TextUNet(denoiser, channels)
    if family != "dit":
        encoder = PromptEncoder(pipe, family, image_size)
    model = DiffusionModel(
        network=network,
        parameterization=parameterization,
        noise_schedule=noise_schedule,
        sample_shape=(channels, int(size[0]), int(size[1])),
        device=dev,
        dtype=denoiser.dtype,
        uncond=uncond,
        data_mean=sidecar.get("data_mean"),
        name=str(sidecar.get("name", name)),
        info={**info, **sidecar.get("info", {})},
        decoder=VaeDecoder(pipe.vae),
        prompt_encoder=encoder,
    )
    return with_prompts(model, [""]) if encoder is not None else model


def prompt_lines(text: str) -> list[str]:
    """The prompts of a prompt file: one per line, surrounding blanks and empty lines dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def with_prompts(model: DiffusionModel, prompts: Sequence[str], negative_prompt: str | None = None) -> DiffusionModel:
    """``model`` conditioned on ``prompts``: cond i selects prompt i, guidance pairs it with the negative prompt
    (default: the empty prompt, or zeros where the pipeline's config says so)."""
    if model.prompt_encoder is None:
        raise SolverError(f"prompts: {model.name} is not a text-to-image model")
    prompts = [str(p) for p in prompts]
    cond, neg = model.prompt_encoder(prompts, negative_prompt)
    table = _tree_cat(cond, neg)
    base = model.network.base if isinstance(model.network, PromptTable) else model.network
    info = {**model.info, "num_class_embeds": len(prompts) + 1, "prompts": tuple(prompts),
            "negative_prompt": negative_prompt}
    return replace(model, network=PromptTable(base, table), uncond=torch.tensor(len(prompts), device=model.device),
                   info=info)
