"""Metrics of latent models: image metrics on decoded latents, and the CLIP score of text-to-image samples.

A latent model's samples are latents; :class:`Decoded` runs its VAE decoder (which batches)
once per evaluation and hands the images to every image metric (FID/KID/PR, CLIP score),
while the reference-RMSE proxy stays on the latents.

The CLIP score uses transformers' ``CLIPModel`` from a local directory (transformers is already
a dependency for the pipelines' text encoders; torchmetrics' CLIPScore is a wrapper around the
same model and open_clip brings its own weight format): 100 · max(cos(image, prompt), 0),
averaged over samples — torchmetrics' definition — with each sample scored against the prompt
its noise was paired with. Higher is better.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..noise_set import NoiseSet
from .quality import Metric

#: CLIP's image normalisation (OpenAI's), used when the directory has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipModelError(ValueError):
    """A CLIP model directory that cannot be used; the message names it."""


@dataclass
class Decoded:
    """Image metrics applied to the decoded latents (one decode per evaluation)."""

    decoder: Callable[[torch.Tensor], torch.Tensor]
    metrics: Sequence[Metric]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for metric in self.metrics for name in metric.names))

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        images = self.decoder(samples)
        values: dict[str, float] = {}
        for metric in self.metrics:
            values.update(metric(images, noises))
        return values


@dataclass
class ClipScore:
    """CLIP score of images in [−1, 1] against ``prompts[label]`` of each sample's noise."""

    model_dir: Path
    prompts: Sequence[str]
    device: str | torch.device = "cpu"
    batch_size: int = 64
    names: tuple[str, ...] = field(default=("clip_score",), init=False)

    def __post_init__(self) -> None:
        from transformers import AutoTokenizer, CLIPModel

        from schedsearch.solvers.pipelines import quiet_loading

        path = Path(self.model_dir).expanduser()
        if not (path / "config.json").is_file():
            raise ClipModelError(f"clip model {path}: no config.json there (save one with CLIPModel.save_pretrained "
                                 "and its tokenizer beside it); nothing is downloaded")
        try:
            with quiet_loading():
                self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # not a CLIP config, missing weights or tokenizer files, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClipModelError(f"clip model {path}: cannot be loaded: {reason}") from None
        self.model.to(self.device)
        mean, std = CLIP_MEAN, CLIP_STD
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.size = int(self.model.config.vision_config.image_size)
        self._text: torch.Tensor | None = None

    def _text_features(self) -> torch.Tensor:
        """The normalised features of every prompt (P, D), computed once."""
        if self._text is None:
            tokens = self.tokenizer(list(self.prompts), padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
            self._text = torch.nn.functional.normalize(_features(out).float(), dim=-1)
        return self._text

    @torch.inference_mode()
    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float().clamp(-1, 1) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True,
                                            align_corners=False).clamp(0, 1)
        x = (x - self.mean) / self.std
        out = self.model.get_image_features(pixel_values=x.to(self.device, next(self.model.parameters()).dtype))
        return torch.nn.functional.normalize(_features(out).float(), dim=-1)

    def __call__(self, samples: torch.Tensor, noises: NoiseSet) -> dict[str, float]:
        labels = torch.zeros(len(samples), dtype=torch.long) if noises.labels is None else noises.labels.long()
        text = self._text_features()
        scores = []
        for i in range(0, len(samples), self.batch_size):
            img = self._image_features(samples[i:i + self.batch_size])
            txt = text[labels[i:i + self.batch_size].to(text.device)].to(img.device)
            scores.append(100.0 * (img * txt).sum(-1).clamp(min=0))
        return {"clip_score": float(torch.cat(scores).mean())}


def _features(out: object) -> torch.Tensor:
    """transformers returns the projected features as a tensor (or, in newer versions, inside an output object)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP output {type(out).__name__}")
