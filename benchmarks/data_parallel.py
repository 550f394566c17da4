"""Does splitting one trial's samples across workers (data-parallel sampling) pay?

Two ways to spend W Ray workers on evaluations of N draws each:

- ``job-parallel`` (what the engines do): each worker measures whole jobs;
- ``data-parallel``: every job's N draws are cut into W shards, each worker samples one shard
  of the same noise set, the driver gathers the samples and computes the metrics once.

Rows: the latency of a single evaluation (one job, W workers), and the throughput of a batch
of W jobs. Both ways measure the same samples (the shards are slices of the one noise set), and
the gathered metric is checked against a whole evaluation.

    .venv/bin/python benchmarks/data_parallel.py [--model builtin:digits] [--samples 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

from schedsearch.search.context import SEARCH_NOISE, EvaluationSpec, build_context
from schedsearch.search.metrics.quality import sample_batched
from schedsearch.search.noise_set import NoiseSet
from schedsearch.solvers import Schedule, baseline, load_model


class Sampler:
    """A worker: the context built once; whole evaluations, or the samples of one shard."""

    def __init__(self, spec: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.context = build_context(EvaluationSpec.from_dict(spec))

    def evaluate(self, schedule: dict[str, Any], n: int) -> float:
        return float(self.context.evaluate(schedule, n).objective)

    def shard(self, schedule: dict[str, Any], start: int, stop: int) -> torch.Tensor:
        ev = self.context.evaluators[SEARCH_NOISE]
        noises = ev.noises
        part = NoiseSet(noises.noise[start:stop], None if noises.labels is None else noises.labels[start:stop],
                        noises.seed)
        return sample_batched(ev.model, Schedule.from_dict(schedule), part, ev.guidance_scale, ev.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:digits")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    torch.set_num_threads(1)
    n, w = args.samples, args.workers
    with tempfile.TemporaryDirectory() as cache:
        spec = EvaluationSpec(model=args.model, search_samples=n, holdout_samples=16, cache_dir=cache)
        driver = build_context(spec)  # the driver's metrics for the gathered samples (and the cache for workers)
        model = load_model(args.model, device="cpu")
        schedules = [baseline(name, 5, model).to_dict() for name in ("dpmpp_2m", "unipc_bh2", "ipndm", "dpmpp_3m")][:w]
        ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            actors = [ray.remote(Sampler).options(num_cpus=1).remote(spec.to_dict()) for _ in range(w)]
            ray.get([a.evaluate.remote(schedules[0], 16) for a in actors])  # warm

            def job_parallel(jobs: list[dict[str, Any]]) -> list[float]:
                return ray.get([actors[i % w].evaluate.remote(s, n) for i, s in enumerate(jobs)])

            def data_parallel(jobs: list[dict[str, Any]]) -> list[float]:
                cuts = [round(k * n / w) for k in range(w + 1)]
                out = []
                for s in jobs:
                    parts = ray.get([actors[k].shard.remote(s, cuts[k], cuts[k + 1]) for k in range(w)])
                    ev = driver.evaluators[SEARCH_NOISE]
                    out.append(float(ev._measure(torch.cat(parts), ev.noises.head(n), time.perf_counter()).objective))
                return out

            whole = job_parallel(schedules)
            split = data_parallel(schedules)
            assert all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(whole, split)), (whole, split)
            rows = []
            for name, fn in (("job-parallel", job_parallel), ("data-parallel", data_parallel)):
                one = min(_timed(fn, schedules[:1]) for _ in range(args.repeats))
                batch = min(_timed(fn, schedules) for _ in range(args.repeats))
                rows.append((name, one, batch))
        finally:
            ray.shutdown()
    print(f"{args.model}, NFE 5, {n} draws per evaluation, {w} workers (1 CPU thread each)")
    print(f"{'way':<15}{'1 job, s':>10}{f'{w} jobs, s':>12}{'evals/min':>11}")
    for name, one, batch in rows:
        print(f"{name:<15}{one:>10.2f}{batch:>12.2f}{60 * w / batch:>11.1f}")
    jp, dp = rows
    print(f"data-parallel / job-parallel: latency of one evaluation {dp[1] / jp[1]:.2f}, "
          f"time for a batch of {w} {dp[2] / jp[2]:.2f}")


def _timed(fn: Any, jobs: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    fn(jobs)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
