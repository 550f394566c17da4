"""``schedsearch baseline`` and ``schedsearch sample``: build a baseline schedule, run a schedule."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import UserError, grid_arg, read_schedule


def _cmd_baseline(args: argparse.Namespace) -> None:
    from schedsearch.solvers import baseline, load_model

    model = load_model(args.model, device="cpu")
    schedule = baseline(args.name, args.nfe, model, grid=args.grid)
    text = schedule.to_json()
    if args.output in (None, "-"):
        print(text)
    else:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.name} (NFE {schedule.nfe}, {len(schedule.steps)} steps) to {args.output}")


def _labels(args: argparse.Namespace, model: Any, n: int) -> Any:
    import torch

    num = model.info.get("num_class_embeds")
    if args.labels is not None:
        values = [int(v) for v in args.labels.split(",")]
        labels = torch.tensor(values * (n // len(values) + 1))[:n]
    elif model.num_classes:
        labels = torch.arange(n) % model.num_classes
    else:
        return None
    if num and (labels.min() < 0 or labels.max() >= num):
        raise UserError(f"--labels: class labels must lie in 0..{num - 1}")
    return labels


def _initial_noise(args: argparse.Namespace, model: Any) -> Any:
    import torch

    if args.noise is not None:
        try:
            noise = torch.load(args.noise, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"noise file not found: {args.noise}") from None
        except Exception as exc:
            raise UserError(f"cannot read noise file {args.noise}: {type(exc).__name__}") from None
        if not isinstance(noise, torch.Tensor):
            raise UserError(f"noise file {args.noise} does not hold a tensor")
        if tuple(noise.shape[1:]) != tuple(model.sample_shape):
            raise UserError(f"noise: shape {tuple(noise.shape)} does not match the model's (N, {model.sample_shape})")
        return noise
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randn((args.num, *model.sample_shape), generator=generator, dtype=model.state_dtype)


def _cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from schedsearch.solvers import load_model, sample

    schedule = read_schedule(args.schedule)
    model = load_model(args.model, device=args.device)
    noise = _initial_noise(args, model)
    labels = _labels(args, model, noise.shape[0])
    x = sample(model, schedule, noise, cond=labels, guidance_scale=args.guidance_scale)
    if not torch.isfinite(x).all():
        raise UserError("sampling produced NaN or inf values (the schedule diverges on this model)")
    if args.out:
        torch.save(x.cpu(), args.out)
    if args.png:
        if x.dim() != 4:
            raise UserError("--png needs an image model (samples of shape C×H×W)")
        from torchvision.utils import save_image

        save_image((x.float().cpu() + 1) / 2, args.png, nrow=int(max(1, round(x.shape[0] ** 0.5))))
    where = ", ".join(p for p in (args.out, args.png) if p) or "nowhere (give --out or --png)"
    print(f"sampled {x.shape[0]} with NFE {schedule.nfe} on {model.name}; wrote {where}")


def register(sub: Any) -> None:
    p = sub.add_parser("baseline", help="write a baseline solver's schedule as JSON")
    p.add_argument("name", help="ddim, dpm_solver_1..3, dpmpp_2m, dpmpp_3m, unipc_bh1/2, unip_bh1/2, ipndm")
    p.add_argument("--nfe", type=int, required=True, help="model evaluations")
    p.add_argument("--grid", type=grid_arg, default="uniform_lambda",
                   help="uniform_t, uniform_lambda, quadratic, karras, linspace, leading, trailing, ays:<name>, "
                        "or comma-separated model times")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("-o", "--output", help="output JSON file (default: stdout)")
    p.set_defaults(run=_cmd_baseline)

    p = sub.add_parser("sample", help="run a schedule JSON on a model")
    p.add_argument("schedule", help="schedule JSON file")
    p.add_argument("--model", required=True, help="diffusers directory, hub id, or builtin:<name>")
    p.add_argument("--noise", help="initial noise tensor (.pt, shape N×sample shape)")
    p.add_argument("--seed", type=int, default=0, help="seed for the initial noise when --noise is not given")
    p.add_argument("-n", "--num", type=int, default=64, help="number of samples when --noise is not given")
    p.add_argument("--labels", help="class label(s), comma-separated, for class-conditional models")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: the schedule's)")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--out", help="write the samples tensor here (.pt)")
    p.add_argument("--png", help="write an image grid here (image models)")
    p.set_defaults(run=_cmd_sample)
