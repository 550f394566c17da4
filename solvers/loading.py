"""``load_model``: resolve a model reference into a :class:`DiffusionModel`.

References: a diffusers pipeline directory (``model_index.json`` with ``unet/`` and
``scheduler/``; latent pipelines — Stable Diffusion, SDXL, DiT, PixArt, SD3 — load through
:mod:`.pipelines`), a bare UNet directory with a scheduler config beside it (in the same
folder as ``scheduler_config.json``, in ``scheduler/``, or in ``../scheduler/``), a hub id
(``org/name``, resolved by diffusers / huggingface_hub), or ``builtin:<name>``.
A directory may carry ``schedsearch_model.json`` with extras: ``uncond_class_label`` (the
null class for classifier-free guidance), ``data_mean``, ``name``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError
from .gmm import GaussianMixture
from .models import DiffusionModel, Parameterization
from .noise_schedules import ContinuousVPLinear, DiscreteVP
from .pipelines import PIPELINES, check_components, is_latent_pipeline, load_pipeline

SIDECAR = "schedsearch_model.json"
#: UNet weight files diffusers' ``from_pretrained`` reads, in its order of preference
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
#: pixel-space pipelines whose UNet is the whole model
_UNET_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "PNDMPipeline")


class DiffusersUNet:
    """Network adapter for diffusers UNets: ``cond`` is class labels or encoder states."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.conditional_on_text = type(unet).__name__ == "UNet2DConditionModel"

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if isinstance(cond, dict):
            return self.unet(x, t, **cond).sample
        if self.conditional_on_text:
            return self.unet(x, t, encoder_hidden_states=cond).sample
        return self.unet(x, t, class_labels=cond).sample


def _builtin_gmm_ring() -> DiffusionModel:
    ns = DiscreteVP.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
    return GaussianMixture.ring().as_model(ns, name="builtin:gmm-ring")


def _builtin_gmm_8d() -> DiffusionModel:
    mixture = GaussianMixture.random(8, 6, torch.Generator().manual_seed(0))
    return mixture.as_model(ContinuousVPLinear(), name="builtin:gmm-8d")


def _builtin_digits() -> DiffusionModel:
    from .digits import DIGITS_MODEL_DIR

    if not (DIGITS_MODEL_DIR / "model_index.json").exists():
        raise ModelLoadError(f"model: the bundled digits model is missing from {DIGITS_MODEL_DIR}")
    return _load_directory(DIGITS_MODEL_DIR, "cpu", None, None)


BUILTINS: dict[str, Callable[[], DiffusionModel]] = {
    "digits": _builtin_digits,
    "gmm-ring": _builtin_gmm_ring,
    "gmm-8d": _builtin_gmm_8d,
}


def load_model(
    ref: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    uncond: Any = None,
) -> DiffusionModel:
    """Load the model named by ``ref`` (see the module docstring) on ``device``."""
    text = str(ref)
    if text.startswith("builtin:"):
        name = text.split(":", 1)[1]
        if name not in BUILTINS:
            raise ModelLoadError(f"model: unknown builtin {name!r} (known: {', '.join(BUILTINS)})")
        model = BUILTINS[name]()
        if device is not None and torch.device(device) != model.device:
            model = _moved(model, torch.device(device))
        return model
    path = Path(text).expanduser()
    if path.exists():
        return _load_directory(path, device, dtype, uncond)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        return _load_hub(text, device, dtype, uncond)
    raise ModelLoadError(f"model: path not found: {text}")


def _moved(model: DiffusionModel, device: torch.device) -> DiffusionModel:
    from dataclasses import replace

    if isinstance(model.network, DiffusersUNet):
        model.network.unet.to(device)
    return replace(model, device=device, uncond=None if model.uncond is None else torch.as_tensor(model.uncond).to(device))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model: cannot read {path}: {reason}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"model: {path} is not a JSON object")
    return data


def _load_directory(path: Path, device: Any, dtype: torch.dtype | None, uncond: Any) -> DiffusionModel:
    if not path.is_dir():
        raise ModelLoadError(f"model: {path} is not a directory")
    sidecar = _read_json(path / SIDECAR) if (path / SIDECAR).exists() else {}
    index = path / "model_index.json"
    if index.exists():
        components = _read_json(index)
        if is_latent_pipeline(components):
            check_components(path, components)
            return load_pipeline(path, components["_class_name"], device, dtype, uncond, sidecar)
        unet_name = next(
            (k for k, v in components.items() if isinstance(v, list) and len(v) == 2 and v[1] in _UNET_CLASSES),
            None,
        )
        if components.get("_class_name", "DDPMPipeline") not in _UNET_PIPELINES:
            raise ModelLoadError(f"model: pipeline class {components.get('_class_name')!r} in {path} is not supported "
                                 f"(supported: {', '.join(_UNET_PIPELINES + tuple(PIPELINES))}, or a UNet2DModel "
                                 "with its scheduler)")
        if unet_name is None:
            raise ModelLoadError(f"model: {index} lists no UNet2DModel/UNet2DConditionModel component")
        unet_dir = path / unet_name
        sched = path / "scheduler" / "scheduler_config.json"
    else:
        unet_dir = path
        candidates = [path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
                      path.parent / "scheduler" / "scheduler_config.json"]
        sched = next((c for c in candidates if c.exists()), candidates[0])
    if not (unet_dir / "config.json").exists():
        raise ModelLoadError(f"model: no UNet config.json in {unet_dir}")
    if not sched.exists():
        raise ModelLoadError(f"model: no scheduler config found for {path} (looked for {sched})")
    unet_class = _read_json(unet_dir / "config.json").get("_class_name")
    if unet_class not in _UNET_CLASSES:
        raise ModelLoadError(f"model: {unet_dir} holds a {unet_class!r}, expected one of {', '.join(_UNET_CLASSES)}")
    _check_weights(unet_dir)
    import diffusers

    try:
        unet = getattr(diffusers, unet_class).from_pretrained(unet_dir, low_cpu_mem_usage=False)
    except Exception as exc:  # mismatched shapes, unreadable pickles, ...: one line naming the folder
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model: cannot load the UNet weights in {unet_dir}: {reason}") from None
    return _assemble(unet, _read_json(sched), str(path), sidecar, device, dtype, uncond)


def _check_weights(unet_dir: Path) -> None:
    """The UNet's weights file exists and, for safetensors, has a readable header (before diffusers sees it)."""
    present = [unet_dir / name for name in WEIGHT_FILES if (unet_dir / name).exists()]
    if not present:
        raise ModelLoadError(f"model: no UNet weights in {unet_dir} (expected {WEIGHT_FILES[0]}, "
                             "as save_pretrained writes it)")
    if present[0].suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(present[0]), framework="pt") as f:
                f.keys()
        except Exception:  # SafetensorError: truncated, not safetensors at all, ...
            raise ModelLoadError(f"model: {present[0]} is not a readable safetensors file (corrupt or truncated?)") \
                from None


def _hub_offline() -> bool:
    """True when huggingface_hub is told to stay offline (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick request to the hub's endpoint ($HF_ENDPOINT; proxies honoured): any HTTP answer counts."""
    import os
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, refused, DNS failure, timeout, malformed endpoint
        return False
    return True


def _load_hub(repo_id: str, device: Any, dtype: torch.dtype | None, uncond: Any) -> DiffusionModel:
    """From the hub, or without network from the local Hugging Face cache only (no retries, no waiting)."""
    offline = _hub_offline()
    local_only = offline or not hub_reachable()
    try:
        with warnings.catch_warnings():  # diffusers passes huggingface_hub an argument it deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            pipeline = _hub_pipeline(repo_id, local_only)
            if pipeline is not None:
                return load_pipeline(repo_id, pipeline, device, dtype, uncond, {}, local_only=local_only)
            unet, config = _load_hub_files(repo_id, local_only)
    except ModelLoadError:
        raise
    except Exception as exc:  # network, missing repo, offline cache miss: one line for the user
        if offline:
            raise ModelLoadError(f"model: hub id {repo_id!r} is not in the local Hugging Face cache "
                                 "(HF_HUB_OFFLINE is set)") from None
        if local_only:
            raise ModelLoadError(f"model: cannot reach the Hugging Face hub for {repo_id!r} (no network?), "
                                 "and it is not in the local cache") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelLoadError(f"model: cannot load hub id {repo_id!r}: {type(exc).__name__}: {reason}") from None
    return _assemble(unet, config, repo_id, {}, device, dtype, uncond)


def _hub_pipeline(repo_id: str, local_only: bool) -> str | None:
    """The latent-pipeline class of a hub repository's model_index.json (None: none, or not one we know)."""
    import diffusers

    try:
        index = diffusers.DiffusionPipeline.load_config(repo_id, local_files_only=local_only)
    except Exception:  # no model_index.json (a bare UNet repository): the UNet path reports what is missing
        return None
    return index["_class_name"] if is_latent_pipeline(index) else None


def _load_hub_files(repo_id: str, local_only: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The UNet and the scheduler config of a hub id (from the local cache only with ``local_only``)."""
    import diffusers

    config = diffusers.DDPMScheduler.load_config(repo_id, subfolder="scheduler", local_files_only=local_only)
    unet_config = diffusers.UNet2DModel.load_config(repo_id, subfolder="unet", local_files_only=local_only)
    unet_class = unet_config.get("_class_name", "UNet2DModel")
    if unet_class not in _UNET_CLASSES:
        raise ModelLoadError(f"model: hub id {repo_id} holds a {unet_class!r}")
    unet = getattr(diffusers, unet_class).from_pretrained(repo_id, subfolder="unet", low_cpu_mem_usage=False,
                                                          local_files_only=local_only)
    return unet, dict(config)


def _assemble(
    unet: torch.nn.Module,
    sched_config: dict[str, Any],
    name: str,
    sidecar: dict[str, Any],
    device: Any,
    dtype: torch.dtype | None,
    uncond: Any,
) -> DiffusionModel:
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = dtype or next(unet.parameters()).dtype
    if dt != next(unet.parameters()).dtype:
        unet = unet.to(dtype=dt)
    unet = unet.to(device=dev).eval().requires_grad_(False)
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size, cfg.sample_size)
    if uncond is None and "uncond_class_label" in sidecar:
        uncond = torch.tensor(int(sidecar["uncond_class_label"]), device=dev)
    return DiffusionModel(
        network=DiffusersUNet(unet),
        parameterization=Parameterization.from_diffusers(sched_config.get("prediction_type", "epsilon")),
        noise_schedule=DiscreteVP.from_config(sched_config),
        sample_shape=(int(cfg.in_channels), int(size[0]), int(size[1])),
        device=dev,
        dtype=dt,
        uncond=uncond,
        data_mean=sidecar.get("data_mean"),
        name=str(sidecar.get("name", name)),
        info={"source": name, "num_class_embeds": getattr(cfg, "num_class_embeds", None), **sidecar.get("info", {})},
    )
