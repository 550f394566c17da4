"""The reference our searched schedules must beat: every baseline on the bundled models.

Digits (FID against the training split, 2,000 samples of fixed noise, classes cycled;
guidance 1 and one guided scale) and a Gaussian mixture (exact MMD), for every solver ×
grid × NFE. Also: seconds per evaluation at 500 / 2,000 samples on this machine, and the
Kendall τ of the cheap proxy (RMSE to a 100-NFE solve) and of 500-sample FID (the first
500 of the same draws) against 2,000-sample FID over all baselines.

    .venv/bin/python benchmarks/baselines_table.py [--samples 2000] [--guided 2.0] [--nfe 3,4,5,6,8,10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import combinations

import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from schedsearch.search.compare import default_evaluator
from schedsearch.search.metrics.fidelity import FidelityConfig, fidelity_metrics
from schedsearch.search.metrics.quality import ReferenceDistance, sample_batched
from schedsearch.search.noise_set import NoiseSet
from schedsearch.solvers import BASELINES, baseline, load_model
from schedsearch.solvers.digits import load_digits_split

GRIDS = ("uniform_t", "uniform_lambda", "quadratic", "karras")


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-a of two paired lists (no dependence on scipy)."""
    concordant = discordant = 0
    for i, j in combinations(range(len(a)), 2):
        s = (a[i] - a[j]) * (b[i] - b[j])
        concordant += s > 0
        discordant += s < 0
    pairs = len(a) * (len(a) - 1) / 2
    return (concordant - discordant) / pairs


def table(results: dict[tuple[str, str, int], float], nfes: list[int], title: str) -> None:
    print(f"\n{title}")
    labels = sorted({(s, g) for s, g, _ in results}, key=lambda sg: (list(BASELINES).index(sg[0]), GRIDS.index(sg[1])))
    best = {n: min(v for (s, g, m), v in results.items() if m == n) for n in nfes}
    print(f"{'solver/grid':<28}" + "".join(f"{'NFE ' + str(n):>10}" for n in nfes))
    for s, g in labels:
        cells = []
        for n in nfes:
            v = results.get((s, g, n))
            cells.append(f"{'-' if v is None else f'{v:.3g}' + ('*' if v == best[n] else ' '):>10}")
        print(f"{s + '/' + g:<28}" + "".join(cells))


def run_digits(samples: int, guidance: float | None, nfes: list[int], cache: Path) -> None:
    """Each schedule samples the fixed noise set once; 500-sample FID uses the first 500 of the same draws."""
    model = load_model("builtin:digits")
    train, _ = load_digits_split()
    noises = NoiseSet.draw(model.sample_shape, samples, seed=0, num_classes=10)
    proxy_metric = ReferenceDistance(model, baseline("dpmpp_3m", 100, model), guidance)
    config = FidelityConfig(kid=False, prc=False, cache_root=cache)
    fid, fid_small, proxy = {}, {}, {}
    jobs = [(s, g, n) for s in BASELINES for g in GRIDS for n in nfes]
    for s, g, n in tqdm(jobs, desc=f"digits guidance={guidance}", file=sys.stderr):
        x = sample_batched(model, baseline(s, n, model, grid=g), noises, guidance, 1000)
        if not torch.isfinite(x).all():
            continue
        fid[s, g, n] = fidelity_metrics(x, train.images, config)["fid"]
        fid_small[s, g, n] = fidelity_metrics(x[:500], train.images, config)["fid"]
        proxy[s, g, n] = proxy_metric(x, noises)["ref_rmse"]
    table(fid, nfes, f"digits FID ({samples} samples, guidance {guidance or 1.0}; * = best at that NFE)")
    keys = sorted(fid)
    print(f"\nKendall τ vs {samples}-sample FID over {len(keys)} baselines (guidance {guidance or 1.0}): "
          f"proxy ref_rmse {kendall_tau([proxy[k] for k in keys], [fid[k] for k in keys]):.3f}, "
          f"500-sample FID {kendall_tau([fid_small[k] for k in keys], [fid[k] for k in keys]):.3f}")


def time_evaluations(samples: int, repeats: int = 3) -> None:
    """Seconds per full evaluation (sampling + FID/KID/PR + accuracy + proxy) on this machine."""
    model = load_model("builtin:digits")
    print(f"\nseconds per evaluation (all digits metrics; median of {repeats}; torch threads "
          f"{torch.get_num_threads()})")
    print(f"{'schedule':<16}" + "".join(f"{str(n) + ' samples':>14}" for n in (500, samples)))
    evaluators = {n: default_evaluator(model, n, seed=0) for n in (500, samples)}
    for ev in evaluators.values():
        ev.evaluate(baseline("ddim", 3, model))  # reference solve and caches warm
    for name, nfe in (("dpmpp_2m", 5), ("dpmpp_2m", 10)):
        cells = []
        for n, ev in evaluators.items():
            cells.append(statistics.median(ev.evaluate(baseline(name, nfe, model)).seconds for _ in range(repeats)))
        print(f"{name + ' NFE ' + str(nfe):<16}" + "".join(f"{c:>14.2f}" for c in cells))


def run_mixture(samples: int, nfes: list[int]) -> None:
    model = load_model("builtin:gmm-8d")
    evaluator = default_evaluator(model, samples, seed=0)
    mmd = {}
    for s, g, n in tqdm([(s, g, n) for s in BASELINES for g in GRIDS for n in nfes], desc="gmm-8d", file=sys.stderr):
        r = evaluator.evaluate(baseline(s, n, model, grid=g))
        if not r.failed:
            mmd[s, g, n] = 1e3 * r.metrics["mmd"]
    table(mmd, nfes, f"gmm-8d exact MMD² ×1e3 ({samples} samples; * = best at that NFE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--guided", type=float, default=2.0)
    parser.add_argument("--nfe", default="3,4,5,6,8,10")
    args = parser.parse_args()
    nfes = [int(v) for v in args.nfe.split(",")]
    start = time.time()
    run_mixture(args.samples, nfes)
    with tempfile.TemporaryDirectory() as cache:
        run_digits(args.samples, None, nfes, Path(cache))
        run_digits(args.samples, args.guided, nfes, Path(cache))
    time_evaluations(args.samples)
    print(f"\ntotal {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
