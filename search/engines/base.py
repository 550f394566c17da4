"""The engine seam: where evaluations run. Jobs go in by trial number, results come back.

Workers build their :class:`~schedsearch.search.context.EvaluationContext` once from the
search's :class:`~schedsearch.search.context.EvaluationSpec`; the driver alone writes the
store. An engine never loses a job: one whose worker died is run again elsewhere (or comes
back failed with the reason once it has killed several workers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import SEARCH_NOISE
from ..evaluator import EvalResult

if TYPE_CHECKING:
    from ..context import EvaluationContext

#: the kinds of job a worker runs: measure a schedule, or refine it against the teacher
TASKS = ("evaluate", "refine")


class EngineLost(RuntimeError):
    """The engine cannot go on (e.g. its cluster went away); the search stops resumably."""


@dataclass(frozen=True)
class Job:
    """Evaluate ``schedule`` (schedule JSON) with ``num_samples`` draws of the ``noise`` set — or, with
    ``task="refine"``, refine it with the refinement ``options`` (``num_samples`` and ``noise`` unused)."""

    number: int
    schedule: Mapping[str, Any]
    num_samples: int
    noise: str = SEARCH_NOISE
    task: str = "evaluate"
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class JobResult:
    """A job's result. ``pruned``: the engine's scheduler stopped it early, so ``result`` was measured on
    ``result.num_samples`` draws, fewer than the job asked for."""

    number: int
    result: EvalResult
    worker: str
    pruned: bool = False
    output: Mapping[str, Any] | None = None  # a refine job's refined schedule and losses (JSON-able)


#: told of a refine job's progress where the engine can (in-process): (job number, iteration, validation loss)
RefineProgress = Callable[[int, int, "float | None"], None]


def run_job(context: EvaluationContext, job: Job, worker: str, progress: RefineProgress | None = None) -> JobResult:
    """Run one job on a worker's context (every engine's workers run jobs through here)."""
    if job.task == "refine":
        told = None if progress is None else (lambda it, train, val: progress(job.number, it, val))
        output = context.refine(dict(job.schedule), dict(job.options or {}), told)
        error = output.get("error")
        return JobResult(job.number, EvalResult({}, None, 0, float(output.get("seconds", 0.0)), error), worker,
                         output=output)
    return JobResult(job.number, context.evaluate(dict(job.schedule), job.num_samples, job.noise), worker)


class Engine(ABC):
    """Runs jobs; ``capacity`` of them at once."""

    @property
    @abstractmethod
    def capacity(self) -> int: ...

    @property
    @abstractmethod
    def pending(self) -> int:
        """Jobs submitted whose results have not been returned yet."""

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[JobResult]:
        """Results that are ready: at least one while jobs are pending (unless ``timeout`` passes)."""

    @abstractmethod
    def floor(self) -> dict[str, float]:
        """Every metric of the model's high-NFE reference solve on the held-out noise."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What the workers measure: ``objective``, ``metrics`` (names) and ``fingerprints`` (content
        hashes of the noise sets, checked against the stored ones on resume)."""

    def on_refine_progress(self, progress: RefineProgress | None) -> None:
        """Report refine jobs' iterations to ``progress`` where the engine can watch them (in-process)."""

    def cancel(self) -> None:
        """Forget every submitted job (the search was interrupted; the store re-queues them)."""

    def describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:
        pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
