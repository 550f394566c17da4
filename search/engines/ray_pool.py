"""A pool of Ray actors: one evaluation context per actor, jobs dispatched to idle actors.

Local Ray by default (started and stopped by the engine), or a running cluster by address.
An actor that dies (its process killed, its node lost) costs only its in-flight job, which
is queued again for another actor; a replacement actor is started. A job that has killed
``max_job_retries`` actors comes back as a failed result with that reason.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..context import EvaluationSpec, build_context
from ..evaluator import EvalResult
from .base import Engine, Job, JobResult


class EvalWorker:
    """The actor: builds the context once, then evaluates jobs."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.context = build_context(EvaluationSpec.from_dict(spec))
        self.name = f"ray:{socket.gethostname()}:{os.getpid()}"

    def evaluate(self, job: Job) -> JobResult:
        return JobResult(job.number, self.context.evaluate(dict(job.schedule), job.num_samples, job.noise), self.name)

    def floor(self) -> dict[str, float]:
        return self.context.floor()

    def info(self) -> dict[str, Any]:
        return self.context.info()

    def pid(self) -> int:
        return os.getpid()


@dataclass
class _Slot:
    actor: Any
    job: Job | None = None
    ref: Any = None


class RayEngine(Engine):
    def __init__(self, spec: EvaluationSpec, num_workers: int | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0,
                 address: str | None = None, max_job_retries: int = 3) -> None:
        self.max_job_retries = max_job_retries
        import ray

        self.ray = ray
        self.spec = spec
        self.started_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(**kwargs)
            self.started_ray = True
        self.options = dict(num_cpus=num_cpus, num_gpus=num_gpus)
        if num_workers is None:  # one worker per GPU, else per num_cpus CPUs of the cluster
            total = ray.cluster_resources()
            num_workers = int(total.get("GPU", 0) // num_gpus) if num_gpus else int(total.get("CPU", 1) // num_cpus)
            num_workers = max(1, num_workers)
        self.remote_worker = ray.remote(EvalWorker)
        self.slots = [self._start() for _ in range(num_workers)]
        self.queue: deque[Job] = deque()
        self.deaths: dict[int, int] = {}
        self.ready: list[JobResult] = []
        ray.get([s.actor.pid.remote() for s in self.slots])  # every worker has built its context

    def _start(self) -> _Slot:
        return _Slot(self.remote_worker.options(**self.options).remote(self.spec.to_dict()))

    @property
    def capacity(self) -> int:
        return len(self.slots)

    @property
    def pending(self) -> int:
        return len(self.queue) + sum(s.job is not None for s in self.slots) + len(self.ready)

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        for slot in self.slots:
            if slot.job is None and self.queue:
                slot.job = self.queue.popleft()
                slot.ref = slot.actor.evaluate.remote(slot.job)

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        ray = self.ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready:
            busy = [s for s in self.slots if s.job is not None]
            if not busy:
                return []
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = ray.wait([s.ref for s in busy], num_returns=1, timeout=left)
            if not done:
                return []
            for slot in busy:
                if slot.ref in done:
                    self._collect(slot)
            self._dispatch()
        out, self.ready = self.ready, []
        return out

    def _collect(self, slot: _Slot) -> None:
        ray = self.ray
        job = slot.job
        assert job is not None
        try:
            self.ready.append(ray.get(slot.ref))
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError):
            self.deaths[job.number] = self.deaths.get(job.number, 0) + 1
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # already gone
                pass
            slot.actor = self._start().actor
            if self.deaths[job.number] >= self.max_job_retries:
                error = f"the worker evaluating it died {self.deaths[job.number]} times"
                self.ready.append(JobResult(job.number, EvalResult({}, None, job.num_samples, 0.0, error), "ray"))
            else:
                self.queue.appendleft(job)
        slot.job, slot.ref = None, None

    def cancel(self) -> None:
        self.queue.clear()
        self.ready.clear()
        for slot in self.slots:  # let in-flight jobs finish, unheard
            if slot.ref is not None:
                try:
                    self.ray.get(slot.ref)
                except Exception:  # noqa: BLE001 - a dead worker is replaced below
                    slot.actor = self._start().actor
            slot.job, slot.ref = None, None

    def floor(self) -> dict[str, float]:
        return self.ray.get(self.slots[0].actor.floor.remote())

    def info(self) -> dict[str, Any]:
        infos = self.ray.get([s.actor.info.remote() for s in self.slots])
        if any(i != infos[0] for i in infos):
            raise RuntimeError("the workers disagree on the noise sets or metrics (different code or data?)")
        return infos[0]

    def worker_pids(self) -> list[int]:
        return self.ray.get([s.actor.pid.remote() for s in self.slots])

    def describe(self) -> str:
        return f"Ray actor pool ({len(self.slots)} workers)"

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:
                pass
        if self.started_ray:
            self.ray.shutdown()
