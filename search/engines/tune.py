"""The Ray Tune engine, for expensive evaluations: each job a Tune trial with its own resources,
ASHA stopping hopeless schedules early on the sample count, ``FailureConfig`` retrying a trial
whose worker died. The trial store stays the one source of truth: Tune's experiment folder is a
temporary directory, deleted after every batch, and a search resumes from the store.

A batch of jobs on the search noise runs as one Tune experiment. Each trial measures its
schedule on a growing head of the noise set — rungs of ``g, g·η, g·η², …`` draws up to the
job's count, each draw sampled once — and reports the objective at every rung. ASHA
(``reduction_factor`` η, ``time_attr`` the sample count) stops a trial that is not in the best
1/η of those that reached its rung; the job then comes back ``pruned``, with the metrics of the
last rung it reached. Jobs on the held-out noise (the validation that picks the winner) always
run to the end. The actor pool is the right engine when an evaluation takes less than some
seconds: Tune adds about 0.27 s per trial here, the pool 1.6 ms (``benchmarks/engine_overhead.py``),
and ASHA needs large batches (``strategy.batch_size`` of 16 or more) to have peers to compare.

ASHA's decisions depend on which trial reaches a rung first, so a search on this engine is not
bound to repeat the trials of another run with the same seed, as the other engines do.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
from collections import deque
from dataclasses import asdict
from typing import Any

from ..context import SEARCH_NOISE, EvaluationSpec, build_context
from ..evaluator import EvalResult
from .base import Engine, Job, JobResult, run_job
from .ray_pool import EvalWorker, cluster_slots, connect

FAILED_SCORE = 1e30  # what ASHA sees for a failed evaluation: the worst


def rungs(num_samples: int, eta: int, levels: int) -> list[int]:
    """The sample counts a job reports at: ``g, g·η, …`` below ``num_samples``, then ``num_samples``,
    with ``g = ceil(num_samples / η^(levels-1))`` (so they are ASHA's milestones for grace period g)."""
    if levels <= 1 or eta < 2:
        return [num_samples]
    grace = max(1, math.ceil(num_samples / eta ** (levels - 1)))
    out = []
    n = grace
    while n < num_samples:
        out.append(n)
        n *= eta
    return out + [num_samples]


def _trainable() -> Any:
    from ray import tune

    class EvaluateJob(tune.Trainable):
        """Builds the evaluation context once per actor (``reuse_actors``), then one job per trial."""

        def setup(self, config: dict[str, Any]) -> None:
            self.worker = EvalWorker(config["spec"])
            self._begin(config)

        def _begin(self, config: dict[str, Any]) -> None:
            self.job: Job = config["job"]
            self.rungs: list[int] = config["rungs"]
            self.results = self.worker.context.evaluate_progressive(dict(self.job.schedule), self.rungs,
                                                                    self.job.noise)

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self._begin(new_config)
            return True

        def step(self) -> dict[str, Any]:
            r: EvalResult = next(self.results)
            return {"score": FAILED_SCORE if r.objective is None else r.objective, "samples": r.num_samples,
                    "eval": asdict(r), "worker": self.worker.name,
                    "done": r.failed or r.num_samples >= self.rungs[-1]}

    return EvaluateJob


def _collector() -> Any:
    from ray import tune

    class Collect(tune.Callback):
        """Every trial's last reported result, by job number, kept in the driver (not read back from files)."""

        def __init__(self) -> None:
            self.last: dict[int, dict[str, Any]] = {}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.last[trial.config["job"].number] = result

    return Collect()


class TuneEngine(Engine):
    def __init__(self, spec: EvaluationSpec, num_workers: int | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, address: str | None = None, eta: int = 3, levels: int = 3,
                 max_failures: int = 3) -> None:
        import os

        import ray

        # Ctrl-C (and the SIGTERM the loop turns into one) must reach the loop, which marks the search
        # interrupted; Tune's own handler would end the experiment and return its trials half-measured.
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
        self.ray = ray
        self.spec = spec
        self.started_ray = connect(address)
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.concurrency = num_workers or max(1, cluster_slots(num_cpus, num_gpus))
        self.eta, self.levels, self.max_failures = eta, levels, max_failures
        self.queue: deque[Job] = deque()
        self.ready: list[JobResult] = []
        self.trainable = _trainable()
        about = ray.get(ray.remote(_describe).options(num_cpus=num_cpus, num_gpus=num_gpus).remote(spec.to_dict()))
        self.about = about

    @property
    def capacity(self) -> int:
        return self.concurrency

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.ready)

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        if not self.ready and self.queue:
            jobs, self.queue = list(self.queue), deque()
            refine = [job for job in jobs if job.task == "refine"]
            if refine:  # no early stopping to decide: each refinement is one Ray task with a worker's resources
                task = self.ray.remote(_run_job).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                                        max_retries=self.max_failures)
                refs = [(job, task.remote(self.spec.to_dict(), job)) for job in refine]
                for job, ref in refs:
                    try:
                        self.ready.append(self.ray.get(ref))
                    except self.ray.exceptions.RayError as exc:  # its worker died max_failures + 1 times
                        reason = str(exc).strip().splitlines()
                        error = f"the refinement task failed {self.max_failures + 1} times: {reason[-1] if reason else ''}"
                        self.ready.append(JobResult(job.number, EvalResult({}, None, 0, 0.0, error), "tune"))
            groups: dict[tuple[str, int], list[Job]] = {}
            for job in jobs:
                if job.task != "refine":
                    groups.setdefault((job.noise, job.num_samples), []).append(job)
            for (noise, samples), group in groups.items():
                levels = self.levels if noise == SEARCH_NOISE else 1  # the validation is measured in full
                self.ready += self._experiment(group, rungs(samples, self.eta, levels))
        out, self.ready = self.ready, []
        return out

    def _experiment(self, jobs: list[Job], steps: list[int]) -> list[JobResult]:
        """One Tune experiment over ``jobs``; every job comes back (complete, pruned or failed)."""
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        scheduler = FIFOScheduler() if len(steps) == 1 else ASHAScheduler(
            time_attr="samples", metric="score", mode="min", grace_period=steps[0], max_t=steps[-1],
            reduction_factor=self.eta)
        folder = tempfile.mkdtemp(prefix="schedsearch-tune-")
        collected = _collector()
        try:
            tuner = tune.Tuner(
                tune.with_resources(self.trainable, {"cpu": self.num_cpus, "gpu": self.num_gpus}),
                param_space={"spec": self.spec.to_dict(), "rungs": steps, "job": tune.grid_search(jobs)},
                tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=self.concurrency,
                                            reuse_actors=True),
                run_config=tune.RunConfig(storage_path=folder, name="batch", verbose=0, callbacks=[collected],
                                          failure_config=tune.FailureConfig(max_failures=self.max_failures),
                                          checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
            )
            with contextlib.redirect_stdout(io.StringIO()):  # Tune's experiment banners; stdout is the table's
                grid = tuner.fit()
            out = []
            for result in grid:
                job: Job = result.config["job"]
                metrics = collected.last.get(job.number, {})
                if result.error is not None or "eval" not in metrics:
                    reason = str(result.error or "no result").strip().splitlines()
                    error = f"the Tune trial failed {self.max_failures + 1} times: {reason[-1] if reason else ''}"
                    out.append(JobResult(job.number, EvalResult({}, None, job.num_samples, 0.0, error), "tune"))
                    continue
                r = EvalResult(**metrics["eval"])
                pruned = not r.failed and r.num_samples < job.num_samples  # ASHA stopped it before its last rung
                out.append(JobResult(job.number, r, f"tune:{metrics.get('worker', '?')}", pruned))
            return sorted(out, key=lambda j: j.number)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def cancel(self) -> None:
        self.queue.clear()
        self.ready.clear()

    def floor(self) -> dict[str, float]:
        return self.ray.get(self.ray.remote(_floor).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
                            .remote(self.spec.to_dict()))

    def info(self) -> dict[str, Any]:
        return self.about

    def describe(self) -> str:
        return f"Ray Tune (ASHA η={self.eta} over {self.levels} rungs, {self.concurrency} trials at once)"

    def close(self) -> None:
        if self.started_ray:
            self.ray.shutdown()


def _describe(spec: dict[str, Any]) -> dict[str, Any]:
    return build_context(EvaluationSpec.from_dict(spec)).info()


def _run_job(spec: dict[str, Any], job: Job) -> JobResult:
    import socket

    return run_job(build_context(EvaluationSpec.from_dict(spec)), job, f"tune:{socket.gethostname()}:{os.getpid()}")


def _floor(spec: dict[str, Any]) -> dict[str, float]:
    return build_context(EvaluationSpec.from_dict(spec)).floor()
