"""The reference our searched schedules must beat: every baseline on the bundled models.

Digits (FID against the training split, 2,000 samples of fixed noise, classes cycled;
guidance 1 and one guided scale) and a Gaussian mixture (exact MMD), for every solver ×
grid × NFE. Also: seconds per evaluation at 500 / 2,000 samples on this machine, and the
Kendall τ of the cheap proxy (RMSE to a 100-NFE solve) and of 500-sample FID against
2,000-sample FID over all baselines.

    .venv/bin/python benchmarks/baselines_table.py [--samples 2000] [--guided 2.0] [--nfe 3,4,5,6,8,10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import combinations

from tqdm import tqdm

from search.compare import default_evaluator
from search.evaluator import SampleEvaluator
from solvers import BASELINES, baseline, load_model

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


def run_digits(samples: int, guidance: float | None, nfes: list[int]) -> None:
    model = load_model("builtin:digits")
    big = default_evaluator(model, samples, seed=0, guidance_scale=guidance)
    assert isinstance(big, SampleEvaluator)
    fid, fid_small, proxy, secs_big, secs_small = {}, {}, {}, [], []
    jobs = [(s, g, n) for s in BASELINES for g in GRIDS for n in nfes]
    for s, g, n in tqdm(jobs, desc=f"digits guidance={guidance}", file=sys.stderr):
        schedule = baseline(s, n, model, grid=g)
        r = big.evaluate(schedule)
        small = big.evaluate(schedule, 500)
        if r.failed or small.failed:
            continue
        fid[s, g, n], proxy[s, g, n], fid_small[s, g, n] = r.metrics["fid"], r.metrics["ref_rmse"], small.metrics["fid"]
        secs_big.append((n, r.seconds))
        secs_small.append((n, small.seconds))
    table(fid, nfes, f"digits FID ({samples} samples, guidance {guidance or 1.0}; * = best at that NFE)")
    keys = sorted(fid)
    print(f"\nKendall τ vs {samples}-sample FID over {len(keys)} baselines (guidance {guidance or 1.0}): "
          f"proxy ref_rmse {kendall_tau([proxy[k] for k in keys], [fid[k] for k in keys]):.3f}, "
          f"500-sample FID {kendall_tau([fid_small[k] for k in keys], [fid[k] for k in keys]):.3f}")
    for label, secs in (("500", secs_small), (str(samples), secs_big)):
        per_nfe = {n: statistics.median([t for m, t in secs if m == n]) for n in nfes}
        print(f"seconds per evaluation at {label} samples: "
              + ", ".join(f"NFE {n}: {t:.2f}" for n, t in per_nfe.items()))


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
    run_digits(args.samples, None, nfes)
    run_digits(args.samples, args.guided, nfes)
    print(f"\ntotal {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
