"""In-process engine: one context, jobs evaluated one at a time in submission order."""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any

from ..context import EvaluationContext, EvaluationSpec, build_context
from .base import Engine, Job, JobResult, RefineProgress, run_job


class LocalEngine(Engine):
    def __init__(self, spec: EvaluationSpec, context: EvaluationContext | None = None) -> None:
        self.context = context or build_context(spec)
        self.queue: deque[Job] = deque()
        self.worker = f"local:{socket.gethostname()}:{os.getpid()}"
        self.refine_progress: RefineProgress | None = None

    @property
    def capacity(self) -> int:
        return 1

    @property
    def pending(self) -> int:
        return len(self.queue)

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        if not self.queue:
            return []
        job = self.queue.popleft()
        return [run_job(self.context, job, self.worker, self.refine_progress)]

    def on_refine_progress(self, progress: RefineProgress | None) -> None:
        self.refine_progress = progress

    def cancel(self) -> None:
        self.queue.clear()

    def floor(self) -> dict[str, float]:
        return self.context.floor()

    def info(self) -> dict[str, Any]:
        return self.context.info()

    def describe(self) -> str:
        return "in-process"
