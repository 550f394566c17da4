"""FID / KID / precision-recall through torch-fidelity, offline.

The bundled digits classifier's penultimate features are registered as the torch-fidelity
feature extractor ``schedsearch-digits``; any other registered extractor name (e.g.
``inception-v3-compat`` with its weights downloadable or in a local file named by
``extractor_weights``) is a config switch away.
Reference statistics are cached by torch-fidelity under a name derived from the content
(reference images + extractor + settings), so a changed reference is never served stale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

DIGITS_EXTRACTOR = "schedsearch-digits"
#: the independent digits classifier's features: reported, never searched on
INDEPENDENT_DIGITS_EXTRACTOR = "schedsearch-digits-b"
INCEPTION_EXTRACTOR = "inception-v3-compat"


class ExtractorError(ValueError):
    """A feature extractor that is unknown or whose weights cannot be had."""


def register_digits_extractor() -> str:
    """Register both digits extractors with torch-fidelity (idempotent, per process / Ray worker)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    for name, variant in ((DIGITS_EXTRACTOR, "a"), (INDEPENDENT_DIGITS_EXTRACTOR, "b")):
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, _digits_extractor_class(variant))
    return DIGITS_EXTRACTOR


def _digits_extractor_class(variant: str) -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from schedsearch.solvers.digits import load_digits_classifier

    class DigitsFeatureExtractor(FeatureExtractorBase):
        """uint8 images (N, 1, 8, 8) → (penultimate features, logits) of the digits classifier."""

        def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
            super().__init__(name, features_list)
            self.net = load_digits_classifier(variant=variant)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return "features"

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = x.float() / 127.5 - 1.0
            feats = self.net.features(x)
            out = {"features": feats, "logits": self.net.head(feats)}
            return tuple(out[name] for name in self.features_list)

    return DigitsFeatureExtractor


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → uint8 in [0, 255] (what torch-fidelity takes)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


class ImageTensorDataset(Dataset):
    """A torch-fidelity input: uint8 image tensors (N, C, H, W)."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8:
            images = to_uint8(images)
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@dataclass(frozen=True)
class FidelityConfig:
    """Which torch-fidelity metrics to compute and how."""

    extractor: str = DIGITS_EXTRACTOR
    fid: bool = True
    kid: bool = True
    prc: bool = True
    kid_subset_size: int = 1000
    batch_size: int = 500
    cache_root: Path | None = None
    extractor_weights: Path | None = None

    def settings_key(self) -> str:
        return f"{self.extractor}|kid{self.kid_subset_size}"

    def check(self) -> None:
        """Raise :class:`ExtractorError` unless the extractor is registered and its weights file loads into it."""
        self.check_extractor()
        self.check_weights()

    def check_extractor(self) -> type:
        """The registered extractor class, or :class:`ExtractorError` naming the known ones."""
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        register_digits_extractor()
        if self.extractor not in FEATURE_EXTRACTORS_REGISTRY:
            known = ", ".join(sorted(FEATURE_EXTRACTORS_REGISTRY))
            raise ExtractorError(f"feature extractor {self.extractor!r} is not registered (known: {known})")
        return FEATURE_EXTRACTORS_REGISTRY[self.extractor]

    def check_weights(self) -> None:
        """Build the extractor from the weights file once, so a wrong file is named before any sampling."""
        if self.extractor_weights is None:
            return
        extractor_class = self.check_extractor()
        path = Path(self.extractor_weights)
        if not path.is_file():
            raise ExtractorError(f"extractor weights {path}: no such file")
        try:
            layer = extractor_class.get_default_feature_layer_for_metric("fid")
            extractor_class(self.extractor, [layer], feature_extractor_weights_path=str(path), verbose=False)
        except Exception as exc:  # UnpicklingError, state_dict mismatch, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExtractorError(f"extractor weights {path}: not weights of {self.extractor!r} "
                                 f"({type(exc).__name__}{': ' + reason[:120] if reason else ''})") from None


def content_key(reference: torch.Tensor, config: FidelityConfig) -> str:
    """Hash of the reference images, the extractor (and its weights) and the settings."""
    h = hashlib.sha256()
    ref = to_uint8(reference) if reference.dtype != torch.uint8 else reference
    h.update(str(tuple(ref.shape)).encode())
    h.update(ref.contiguous().numpy().tobytes())
    h.update(config.settings_key().encode())
    weights = config.extractor_weights
    if weights is None and config.extractor in (DIGITS_EXTRACTOR, INDEPENDENT_DIGITS_EXTRACTOR):
        from schedsearch.solvers.digits import CLASSIFIERS

        weights = CLASSIFIERS["a" if config.extractor == DIGITS_EXTRACTOR else "b"][1]
    if weights is not None:
        h.update(_file_digest(Path(weights)).encode())
    return h.hexdigest()[:24]


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a (possibly large) weights file, once per path, size and modification time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fidelity_metrics(
    samples: torch.Tensor, reference: torch.Tensor, config: FidelityConfig, reference_key: str | None = None
) -> dict[str, float]:
    """torch-fidelity metrics of ``samples`` against ``reference`` (reference statistics cached by content).

    ``reference_key``: ``content_key(reference, config)`` when the caller has it already.
    """
    import torch_fidelity

    if config.extractor in (DIGITS_EXTRACTOR, INDEPENDENT_DIGITS_EXTRACTOR):
        register_digits_extractor()
    n = int(samples.shape[0])
    kwargs: dict[str, Any] = dict(
        input1=ImageTensorDataset(samples),
        input2=ImageTensorDataset(reference),
        cuda=torch.cuda.is_available(),
        feature_extractor=config.extractor,
        fid=config.fid,
        kid=config.kid and n >= 2,
        prc=config.prc,
        kid_subset_size=min(config.kid_subset_size, n, int(reference.shape[0])),
        batch_size=config.batch_size,
        verbose=False,
        save_cpu_ram=True,
    )
    if config.extractor_weights is not None:
        kwargs.update(feature_extractor_weights_path=str(config.extractor_weights))
    if config.cache_root is not None:
        kwargs.update(cache=True, cache_root=str(config.cache_root), input2_cache_name=f"ref-{reference_key or content_key(reference, config)}")
    else:
        kwargs.update(cache=False)
    try:
        raw: Mapping[str, float] = torch_fidelity.calculate_metrics(**kwargs)
    except (OSError, RuntimeError) as exc:
        if config.extractor_weights is None and _is_download_failure(exc):
            raise ExtractorError(
                f"feature extractor {config.extractor!r}: its weights cannot be downloaded here; "
                "pass a local weights file (--extractor-weights PATH)"
            ) from None
        raise
    names = {
        "frechet_inception_distance": "fid",
        "kernel_inception_distance_mean": "kid",
        "kernel_inception_distance_std": "kid_std",
        "precision": "precision",
        "recall": "recall",
        "f_score": "f_score",
    }
    return {names[k]: float(v) for k, v in raw.items() if k in names}


def _is_download_failure(exc: BaseException) -> bool:
    from urllib.error import URLError

    while exc is not None:
        if isinstance(exc, URLError | ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
