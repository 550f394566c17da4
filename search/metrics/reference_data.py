"""A user's reference images for FID / KID / precision-recall.

Accepted: a tensor file (``.pt`` holding a tensor, ``.npy``, or ``.npz`` with one array or
an ``images`` array) laid out (N, C, H, W), (N, H, W, C) or, for one channel, (N, H, W) —
either uint8 in [0, 255] or floats in the samples' range [−1, 1] (a sampler's own output, which
overshoots it a little, is clamped as samples are; beyond ±2 the floats are taken for another scale
and refused) — or a folder of
PNG / JPEG / BMP / WebP images (read in name order). Whatever the source, the result is
uint8 (N, C, H, W) with the model's C, H and W, or :class:`ReferenceDataError` naming the
problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: float reference data may reach this far beyond [-1, 1] (a sampler's overshoot) and is clamped; farther is refused
FLOAT_RANGE = 2.0


class ReferenceDataError(ValueError):
    """Reference images that cannot be read or do not fit the model."""


def load_reference_images(path: str | Path, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """Read reference images as uint8 (N, C, H, W) matching ``sample_shape`` = (C, H, W)."""
    path = Path(path).expanduser()
    if len(sample_shape) != 3:
        raise ReferenceDataError(f"reference images need an image model; this one samples shape {tuple(sample_shape)}")
    if not path.exists():
        raise ReferenceDataError(f"reference data {path}: no such file or directory")
    if path.is_dir():
        images = _read_folder(path, sample_shape[0])
    else:
        images = _to_uint8_nchw(_read_array(path), sample_shape[0], path)
    if images.shape[0] < 2:
        raise ReferenceDataError(f"reference data {path}: needs at least 2 images, found {images.shape[0]}")
    if tuple(images.shape[1:]) != tuple(sample_shape):
        got = "×".join(map(str, images.shape[1:]))
        want = "×".join(map(str, sample_shape))
        raise ReferenceDataError(f"reference data {path}: images are {got} (C×H×W), the model samples {want}")
    return images.contiguous()


def _read_array(path: Path) -> torch.Tensor:
    suffix = path.suffix.lower()
    try:
        if suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npy":
            value = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                name = "images" if "images" in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise ReferenceDataError(f"reference data {path}: .npz holds {names}; name the array 'images'")
                value = torch.from_numpy(archive[name])
        else:
            raise ReferenceDataError(
                f"reference data {path}: unknown format {suffix!r} (use .pt, .npy, .npz or a folder of images)"
            )
    except ReferenceDataError:
        raise
    except Exception as exc:  # unreadable or corrupt file
        raise ReferenceDataError(f"reference data {path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(value, torch.Tensor):
        raise ReferenceDataError(f"reference data {path}: holds a {type(value).__name__}, not a tensor of images")
    return value


def _to_uint8_nchw(images: torch.Tensor, channels: int, path: Path) -> torch.Tensor:
    if images.dim() == 3 and channels == 1:
        images = images[:, None]
    if images.dim() != 4:
        raise ReferenceDataError(f"reference data {path}: expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    if images.shape[1] != channels and images.shape[-1] == channels:
        images = images.permute(0, 3, 1, 2)
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ReferenceDataError(f"reference data {path}: dtype {images.dtype}; use uint8 or floats in [-1, 1]")
    images = images.float()
    if not torch.isfinite(images).all():
        raise ReferenceDataError(f"reference data {path}: contains NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -FLOAT_RANGE or hi > FLOAT_RANGE:
        raise ReferenceDataError(
            f"reference data {path}: float images must lie in [-1, 1] like the samples (a sampler's overshoot up to "
            f"±{FLOAT_RANGE:g} is clamped); found [{lo:.3g}, {hi:.3g}]"
        )
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _read_folder(path: Path, channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReferenceDataError(f"reference data {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    if channels not in (1, 3):
        raise ReferenceDataError(f"reference data {path}: image files give 1 or 3 channels; the model has {channels}")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, OSError):
            raise ReferenceDataError(f"reference data {f}: not a readable image") from None
        if arrays and arr.shape != arrays[0].shape:
            raise ReferenceDataError(
                f"reference data {f}: size {arr.shape[1]}×{arr.shape[0]} differs from "
                f"{files[0].name}'s {arrays[0].shape[1]}×{arrays[0].shape[0]}"
            )
        arrays.append(arr)
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked[:, None] if channels == 1 else stacked.permute(0, 3, 1, 2)
