"""``schedsearch baseline`` and ``schedsearch sample``: build a baseline schedule, run a schedule."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    UserError,
    add_prompt_options,
    at_least,
    check_guidance,
    finite_float,
    grid_arg,
    labels_arg,
    output_path,
    prompted,
    read_schedule,
)


def _cmd_baseline(args: argparse.Namespace) -> None:
    from schedsearch.solvers import ScheduleError, baseline, load_model, model_times

    out = None if args.output in (None, "-") else output_path("-o/--output", args.output)
    model = load_model(args.model, device="cpu")
    try:
        model_times(args.grid, args.nfe, model.noise_schedule)
    except ScheduleError as exc:
        raise UserError(f"--grid: {str(exc).removeprefix('grid: ')}") from None
    schedule = baseline(args.name, args.nfe, model, grid=args.grid)
    text = schedule.to_json()
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        print(f"wrote {args.name} (NFE {schedule.nfe}, {len(schedule.steps)} steps) to {out}")


def _labels(args: argparse.Namespace, model: Any, n: int) -> Any:
    import torch

    classes = model.num_classes
    if args.labels is not None:
        if model.prompt_encoder is not None:
            raise UserError(f"--labels: {model.name} takes prompts (--prompt / --prompts), not class labels")
        if not classes:
            raise UserError(f"--labels: {model.name} is not class-conditional")
        if max(args.labels) >= classes:
            raise UserError(f"--labels: class labels must lie in 0..{classes - 1}, got {max(args.labels)}")
        return torch.tensor(args.labels * (n // len(args.labels) + 1))[:n]
    if classes:
        return torch.arange(n) % classes
    return None


def _read_noise(path: str, model: Any) -> Any:
    import torch

    try:
        noise = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--noise {path}: not found") from None
    except IsADirectoryError:
        raise UserError(f"--noise {path}: is a directory") from None
    except Exception:  # a text file, a pickle of something else, a truncated file, ...
        raise UserError(f"--noise {path}: not a tensor file (save one with torch.save)") from None
    if not isinstance(noise, torch.Tensor):
        raise UserError(f"--noise {path}: holds a {type(noise).__name__}, not a tensor")
    if noise.dim() != len(model.sample_shape) + 1 or tuple(noise.shape[1:]) != tuple(model.sample_shape):
        raise UserError(f"--noise {path}: shape {tuple(noise.shape)} does not match the model's "
                        f"(N, {', '.join(map(str, model.sample_shape))})")
    if noise.shape[0] == 0:
        raise UserError(f"--noise {path}: holds no samples (shape {tuple(noise.shape)})")
    if not noise.is_floating_point():
        raise UserError(f"--noise {path}: dtype {noise.dtype}; initial noise is floating point")
    if not torch.isfinite(noise).all():
        raise UserError(f"--noise {path}: contains NaN or inf values")
    return noise


def _initial_noise(args: argparse.Namespace, model: Any) -> Any:
    import torch

    if args.noise is not None:
        return _read_noise(args.noise, model)
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randn((args.num, *model.sample_shape), generator=generator, dtype=model.state_dtype)


def _cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from schedsearch.solvers import load_model, sample

    out = output_path("--out", args.out) if args.out else None
    png = output_path("--png", args.png, ("png", "jpg", "jpeg")) if args.png else None
    schedule = read_schedule(args.schedule)
    model = prompted(load_model(args.model, device=args.device), args)
    schedule.check_for(model.noise_schedule)
    check_guidance("--guidance-scale", args.guidance_scale, model)
    if png is not None and len(model.image_shape) != 3:
        raise UserError("--png needs an image model (samples of shape C×H×W)")
    noise = _initial_noise(args, model)
    labels = _labels(args, model, noise.shape[0])
    x = sample(model, schedule, noise, cond=labels, guidance_scale=args.guidance_scale)
    if not torch.isfinite(x).all():
        raise UserError("sampling produced NaN or inf values (the schedule diverges on this model); nothing written")
    if out is not None:
        torch.save(x.cpu(), out)
    if png is not None:
        from torchvision.utils import save_image

        images = x if model.decoder is None else model.decoder(x)
        save_image((images.float().cpu() + 1) / 2, png, nrow=int(max(1, round(x.shape[0] ** 0.5))))
    where = ", ".join(str(p) for p in (out, png) if p) or "nowhere (give --out or --png)"
    print(f"sampled {x.shape[0]} with NFE {schedule.nfe} on {model.name}; wrote {where}")


def register(sub: Any) -> None:
    p = sub.add_parser("baseline", help="write a baseline solver's schedule as JSON")
    p.add_argument("name", help="ddim, dpm_solver_1..3, dpmpp_2m, dpmpp_3m, unipc_bh1/2, unip_bh1/2, ipndm")
    p.add_argument("--nfe", type=at_least(1), required=True, help="model evaluations")
    p.add_argument("--grid", type=grid_arg, default="uniform_lambda",
                   help="uniform_t, uniform_lambda, quadratic, karras, linspace, leading, trailing, ays:<name>, "
                        "or comma-separated model times (NFE of them, inside the model's range)")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("-o", "--output", help="output JSON file (default: stdout)")
    p.set_defaults(run=_cmd_baseline)

    p = sub.add_parser("sample", help="run a schedule JSON on a model")
    p.add_argument("schedule", help="schedule JSON file")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("--noise", help="initial noise tensor (.pt, shape N×sample shape; latent models: initial latents)")
    p.add_argument("--seed", type=int, default=0, help="seed for the initial noise when --noise is not given")
    p.add_argument("-n", "--num", type=at_least(1), default=64, help="number of samples when --noise is not given")
    p.add_argument("--labels", type=labels_arg,
                   help="class label(s), comma-separated, repeated over the samples (class-conditional models; "
                        "default: 0, 1, 2, … in turn)")
    add_prompt_options(p)
    p.add_argument("--guidance-scale", type=finite_float,
                   help="classifier-free guidance scale (default: the schedule's guidance_scale, else none)")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--out", help="write the samples tensor here (.pt; latent models: the final latents)")
    p.add_argument("--png", help="write an image grid here (image models; latent models: the decoded images)")
    p.set_defaults(run=_cmd_sample)
