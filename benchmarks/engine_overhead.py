"""Per-trial dispatch overhead: in-process vs the Ray actor pool vs Ray Tune (and the whole loop).

Every engine evaluates the same real jobs — a 5-NFE schedule on the 8-D Gaussian mixture,
``--samples`` draws, the exact MMD — one at a time (submit, wait, next), so a job's wall time
is its evaluation (timed inside the worker) plus what the engine adds around it. The
overhead column is that difference per trial; the ratio compares it to the actor pool's.
Rows:

- ``in-process``: :class:`LocalEngine` (a function call).
- ``ray actor pool``: :class:`RayEngine` with one worker (a remote call to a warm actor that
  holds model, noise and metrics; one ``ray.wait``/``ray.get`` per trial).
- ``ray tune``: a Tune class trainable that builds the same context in ``setup`` and
  evaluates once per trial, ``reuse_actors=True`` (its best case: no actor start per trial),
  one trial at a time — what a per-trial Tune engine would pay.
- ``tune engine (16/batch)``: :class:`TuneEngine` as the loop drives it — 16 jobs submitted, one
  Tune experiment run over them (ASHA off, so every job runs to the end), one worker.
- ``search loop (sqlite)``: the whole :class:`SearchRun` in-process — strategy ask/tell,
  every store transaction on a SQLite file — minus the evaluations; what the loop costs per
  trial on top of the engine.

    .venv/bin/python benchmarks/engine_overhead.py [--trials 200] [--samples 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from schedsearch.search.config import parse_config
from schedsearch.search.context import EvaluationSpec, build_context
from schedsearch.search.engines import Job, LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.solvers import baseline, load_model
from schedsearch.storage import TrialStore


def jobs(n: int, samples: int) -> list[Job]:
    model = load_model("builtin:gmm-8d")
    schedule = baseline("dpmpp_2m", 5, model, grid="uniform_lambda").to_dict()
    return [Job(i, schedule, samples) for i in range(n)]


def run_engine(engine: Any, work: list[Job]) -> tuple[float, float]:
    """Mean wall seconds per job and mean evaluation seconds per job (one job at a time)."""
    for job in work[:5]:  # warm-up
        engine.submit(job)
        engine.wait()
    walls, evals = [], []
    for job in work:
        t = time.perf_counter()
        engine.submit(job)
        (res,) = engine.wait()
        walls.append(time.perf_counter() - t)
        evals.append(res.result.seconds)
    return statistics.mean(walls), statistics.mean(evals)


def run_tune(spec: EvaluationSpec, work: list[Job], workdir: Path) -> tuple[float, float]:
    from ray import tune

    class Evaluate(tune.Trainable):
        def setup(self, config: dict[str, Any]) -> None:
            self.context = build_context(EvaluationSpec.from_dict(config["spec"]))
            self.job = config["job"]

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self.job = new_config["job"]
            return True

        def step(self) -> dict[str, Any]:
            job = self.job
            result = self.context.evaluate(dict(job.schedule), job.num_samples, job.noise)
            return {"objective": result.objective, "eval_seconds": result.seconds, "done": True}

    tuner = tune.Tuner(
        Evaluate,
        param_space={"spec": spec.to_dict(), "job": tune.grid_search(work)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(workdir / "tune"), verbose=0,
                                   checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    evals = [r.metrics["eval_seconds"] for r in grid]
    return wall / len(work), statistics.mean(evals)


def run_batches(engine: Any, work: list[Job], size: int) -> tuple[float, float]:
    """As :func:`run_engine`, but ``size`` jobs submitted at once, then waited for (as the loop does)."""
    start = time.perf_counter()
    evals = []
    for i in range(0, len(work), size):
        for job in work[i:i + size]:
            engine.submit(job)
        while engine.pending:
            evals += [r.result.seconds for r in engine.wait()]
    return (time.perf_counter() - start) / len(work), statistics.mean(evals)


def run_loop(samples: int, trials: int, workdir: Path) -> tuple[float, float]:
    config = parse_config({
        "name": "overhead", "model": "builtin:gmm-8d", "nfe": 5, "budget": trials, "seed": 0,
        "strategy": {"name": "evolution", "batch_size": 1},
        "baselines": {"solvers": ["dpmpp_2m"], "grids": ["uniform_lambda"]},
        "fidelity": {"samples": [samples]},
        "validation": {"top_k": 1, "baselines": 1, "samples": samples, "seed": 1},
    })
    store = TrialStore.open(f"sqlite:///{workdir / 'loop.db'}")
    engine = LocalEngine(config.evaluation_spec())
    evals: list[float] = []
    inner = engine.context.evaluate

    def timed(*a: Any, **k: Any) -> Any:
        r = inner(*a, **k)
        evals.append(r.seconds)
        return r

    floor_seconds: list[float] = []
    inner_floor = engine.context.floor

    def timed_floor() -> Any:
        t = time.perf_counter()
        out = inner_floor()
        floor_seconds.append(time.perf_counter() - t)
        return out

    engine.context.evaluate = timed  # type: ignore[method-assign]
    engine.context.floor = timed_floor  # type: ignore[method-assign]
    start = time.perf_counter()
    SearchRun(config, store, engine).run()
    wall = time.perf_counter() - start - sum(floor_seconds)  # the 100-step floor is not overhead
    store.close()
    return wall / len(evals), statistics.mean(evals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--tune-trials", type=int, default=40, help="Tune is slow per trial; fewer suffice")
    args = parser.parse_args()
    spec = parse_config({"name": "overhead", "model": "builtin:gmm-8d", "nfe": 5,
                         "budget": 1, "fidelity": {"samples": [args.samples]}}).evaluation_spec()
    work = jobs(args.trials, args.samples)
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        wall, ev = run_engine(LocalEngine(spec), work)
        rows.append(("in-process", len(work), wall, ev))
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            from schedsearch.search.engines.ray_pool import RayEngine

            with RayEngine(spec, num_workers=1) as pool:
                wall, ev = run_engine(pool, work)
            rows.append(("ray actor pool", len(work), wall, ev))
            tune_work = work[: args.tune_trials]
            wall, ev = run_tune(spec, tune_work, Path(tmp))
            rows.append(("ray tune", len(tune_work), wall, ev))
            from schedsearch.search.engines.tune import TuneEngine

            engine = TuneEngine(spec, num_workers=1, levels=1)
            wall, ev = run_batches(engine, tune_work, 16)
            rows.append(("tune engine (16/batch)", len(tune_work), wall, ev))
        finally:
            ray.shutdown()
        wall, ev = run_loop(args.samples, args.trials, Path(tmp))
        rows.append(("search loop (sqlite)", args.trials, wall, ev))
    pool_overhead = next(w - e for name, _, w, e in rows if name == "ray actor pool")
    print(f"per-trial dispatch overhead, gmm-8d NFE 5, {args.samples} samples per job, one job at a time")
    print(f"{'engine':<22}{'trials':>7}{'eval ms':>10}{'wall ms':>10}{'overhead ms':>13}{'÷ pool':>9}")
    for name, n, wall, ev in rows:
        over = 1000 * (wall - ev)
        print(f"{name:<22}{n:>7}{1000 * ev:>10.2f}{1000 * wall:>10.2f}{over:>13.2f}"
              f"{(wall - ev) / pool_overhead:>9.2f}")
    print("goal: actor pool ≤ 20 ms per trial")


if __name__ == "__main__":
    main()
