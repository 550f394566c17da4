"""A pool of Ray actors: one evaluation context per actor, jobs dispatched to idle actors.

Local Ray by default (started and stopped by the engine), or a running cluster by address.

Placement: each worker is an actor asking for ``num_cpus``/``num_gpus``, scheduled with Ray's
``SPREAD`` strategy. Ray puts it wherever those resources are free, so GPU workers land one per
GPU, and CPU workers spread over the nodes instead of packing the first one — losing a node then
costs the fewest workers. No placement group: a group reserves a fixed set of bundles at once,
waits until all of them fit, and cannot grow when nodes join, while the trials of a search are
independent and want a pool that follows the cluster.

Size: ``num_workers`` fixed, or (``None``) as many as the live nodes' resources hold, recounted
every ``rescan_s`` seconds — a node that joins gets workers, a node that leaves takes its
workers with it. An actor that dies (its process killed, its node lost) costs only its
in-flight job, which is queued again for another actor. A job that has killed
``max_job_retries`` actors comes back as a failed result with that reason. Jobs only go to
actors that are up (their context built and checked against the others'), never to one Ray
cannot place yet.

A cluster that goes away (the head node stopped) ends the search with :class:`ClusterLost`:
one line, and the trials in the store are resumed against a new cluster.
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
from .base import Engine, EngineLost, Job, JobResult, run_job


class ClusterLost(EngineLost):
    """The Ray cluster cannot be reached any more (its head node stopped or the network failed)."""


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or start local Ray) unless this process is connected already;
    whether this call started the connection (so its owner shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterLost(f"cannot connect to the Ray cluster at {address}: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    return True


def cluster_slots(num_cpus: float, num_gpus: float) -> int:
    """How many workers of ``num_gpus`` GPUs (or, without GPUs, ``num_cpus`` CPUs) the live nodes hold."""
    import ray

    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        per = res.get("GPU", 0) / num_gpus if num_gpus else res.get("CPU", 0) / num_cpus
        total += int(per + 1e-9)
    return total


class EvalWorker:
    """The actor: builds the context once, then evaluates jobs."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import ray

        self.context = build_context(EvaluationSpec.from_dict(spec))
        self.node = ray.get_runtime_context().get_node_id()
        self.name = f"ray:{socket.gethostname()}:{self.node[:8]}:{os.getpid()}"

    def evaluate(self, job: Job) -> JobResult:
        return run_job(self.context, job, self.name)

    def describe(self) -> dict[str, Any]:
        """Where it runs and what it measures (checked against the other workers)."""
        return {"pid": os.getpid(), "node": self.node, "name": self.name, "info": self.context.info()}

    def floor(self) -> dict[str, float]:
        return self.context.floor()


@dataclass
class _Slot:
    actor: Any
    starting: Any  # the ObjectRef of describe() until the actor is up, then None
    about: dict[str, Any] | None = None
    job: Job | None = None
    ref: Any = None


class RayEngine(Engine):
    def __init__(self, spec: EvaluationSpec, num_workers: int | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, address: str | None = None, max_job_retries: int = 3,
                 rescan_s: float = 5.0, start_timeout_s: float = 600.0, lost_after_s: float = 10.0) -> None:
        self.max_job_retries = max_job_retries
        import ray

        self.ray = ray
        self.spec = spec
        self.started_ray = connect(address)
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.lost_after_s = lost_after_s
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        self.head = (host, int(port))
        self.unreachable_since: float | None = None
        self.lost = False  # the cluster went away: nothing left to kill or shut down
        self.options = dict(num_cpus=num_cpus, num_gpus=num_gpus, scheduling_strategy="SPREAD")
        self.fixed = num_workers
        self.rescan_s = rescan_s
        self.remote_worker = ray.remote(EvalWorker)
        self.queue: deque[Job] = deque()
        self.deaths: dict[int, int] = {}
        self.ready: list[JobResult] = []
        self.reference: dict[str, Any] | None = None  # the first worker's info; every other must agree
        target = self._target()
        if target < 1:
            have = ", ".join(f"{k} {v:g}" for k, v in sorted(ray.cluster_resources().items()) if k in ("CPU", "GPU"))
            raise ClusterLost(f"the Ray cluster has no room for a worker ({self._needs()} each; it has {have or 'none'})")
        self.slots = [self._start() for _ in range(target)]
        self._next_scan = time.monotonic() + rescan_s
        deadline = time.monotonic() + start_timeout_s
        while any(s.starting is not None for s in self.slots):  # every first worker has built its context
            if time.monotonic() > deadline:
                raise ClusterLost(f"no Ray worker started within {start_timeout_s:.0f} s ({self._needs()} each)")
            self._poll_starting(timeout=1.0)

    # -- the pool's size and its workers ------------------------------------------------------

    def _needs(self) -> str:
        return f"num_gpus {self.num_gpus:g}" if self.num_gpus else f"num_cpus {self.num_cpus:g}"

    def _target(self) -> int:
        """How many workers the pool should have: the fixed count, or what the live nodes hold."""
        if self.fixed is not None:
            return self.fixed
        return self._call(cluster_slots, self.num_cpus, self.num_gpus)

    def _start(self) -> _Slot:
        actor = self.remote_worker.options(**self.options).remote(self.spec.to_dict())
        return _Slot(actor, actor.describe.remote())

    def _kill(self, slot: _Slot) -> None:
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _up(self, slot: _Slot, about: dict[str, Any]) -> None:
        if self.reference is None:
            self.reference = about["info"]
        elif about["info"] != self.reference:
            raise RuntimeError(f"worker {about['name']} disagrees with the others on the noise sets or metrics "
                               "(different code or data on its node?)")
        slot.about, slot.starting = about, None

    def _poll_starting(self, timeout: float) -> None:
        starting = [s for s in self.slots if s.starting is not None]
        if not starting:
            return
        done, _ = self._call(self.ray.wait, [s.starting for s in starting], num_returns=len(starting),
                             timeout=timeout)
        for slot in starting:
            if slot.starting in done:
                self._settle(slot)

    def _settle(self, slot: _Slot) -> None:
        """A starting actor answered: it is up, or it died (then it is replaced if there is room)."""
        try:
            about = self.ray.get(slot.starting)
        except self._lost_errors():
            self._lost(slot)
            return
        self._up(slot, about)

    def _lost(self, slot: _Slot) -> None:
        """A worker died: unless the whole cluster went, drop it and start another where there is room."""
        self._check_cluster()
        self._kill(slot)
        self.slots.remove(slot)
        if len(self.slots) < self._target():
            self.slots.append(self._start())

    def _resize(self) -> None:
        """Follow the cluster: start workers for new room, drop idle or unplaced ones beyond it."""
        if time.monotonic() < self._next_scan:
            return
        self._next_scan = time.monotonic() + self.rescan_s
        if not self._head_answers():
            self._next_scan = time.monotonic() + 1.0
            return
        target = self._target()
        while len(self.slots) < target:
            self.slots.append(self._start())
        unplaced = [s for s in self.slots if s.starting is not None]
        idle = [s for s in self.slots if s.job is None and s.starting is None]
        for slot in unplaced[::-1] + idle[::-1]:  # never a worker with a job in flight
            if len(self.slots) <= max(target, 1):
                break
            self._kill(slot)
            self.slots.remove(slot)

    # -- errors ---------------------------------------------------------------------------------

    def _lost_errors(self) -> tuple[type[BaseException], ...]:
        e = self.ray.exceptions
        return (e.RayActorError, e.WorkerCrashedError, e.ObjectLostError, e.NodeDiedError, e.OwnerDiedError)

    def _cluster_errors(self) -> tuple[type[BaseException], ...]:
        e = self.ray.exceptions
        return (e.RaySystemError, ConnectionError) + ((e.RpcError,) if hasattr(e, "RpcError") else ())

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A call to Ray itself; a cluster that has gone away becomes one ClusterLost."""
        try:
            return fn(*args, **kwargs)
        except self._cluster_errors() as exc:
            raise ClusterLost(f"lost the Ray cluster: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}") \
                from None

    def _head_answers(self) -> bool:
        """Whether the head node's GCS accepts connections. Asked before every call that needs the GCS:
        with the head gone such a call would block until Ray ends the driver process, with no word
        to the user and no chance to leave the store tidy."""
        try:
            socket.create_connection(self.head, timeout=2.0).close()
        except OSError:
            now = time.monotonic()
            if self.unreachable_since is None:
                self.unreachable_since = now
            if now - self.unreachable_since >= self.lost_after_s:
                self.lost = True
                raise ClusterLost(f"lost the Ray cluster: its head {self.head[0]}:{self.head[1]} has not answered "
                                  f"for {now - self.unreachable_since:.0f} s") from None
            return False
        self.unreachable_since = None
        return True

    def _check_cluster(self) -> None:
        """After a worker died: if the head has gone, wait ``lost_after_s`` for it, then give up in one line."""
        while not self._head_answers():
            time.sleep(1.0)

    # -- the engine ---------------------------------------------------------------------------

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
            if slot.job is None and slot.starting is None and self.queue:
                slot.job = self.queue.popleft()
                slot.ref = slot.actor.evaluate.remote(slot.job)

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready:
            self._resize()
            self._dispatch()
            busy = [s for s in self.slots if s.job is not None]
            starting = [s for s in self.slots if s.starting is not None]
            if not busy and not self.queue:
                return []
            left = self.rescan_s if deadline is None else max(0.0, min(self.rescan_s, deadline - time.monotonic()))
            refs = [s.ref for s in busy] + [s.starting for s in starting]
            if not refs:  # queued jobs, no worker up yet: wait for the cluster to give one room
                time.sleep(min(left, 0.5))
            else:
                done, _ = self._call(self.ray.wait, refs, num_returns=1, timeout=left)
                for slot in busy:
                    if slot.ref in done:
                        self._collect(slot)
                for slot in starting:
                    if slot.starting in done:
                        self._settle(slot)
            self._dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        out, self.ready = self.ready, []
        return out

    def _collect(self, slot: _Slot) -> None:
        job = slot.job
        assert job is not None
        try:
            self.ready.append(self.ray.get(slot.ref))
        except self._lost_errors():
            self._lost(slot)
            self.deaths[job.number] = self.deaths.get(job.number, 0) + 1
            if self.deaths[job.number] >= self.max_job_retries:
                error = f"the worker evaluating it died {self.deaths[job.number]} times"
                self.ready.append(JobResult(job.number, EvalResult({}, None, job.num_samples, 0.0, error), "ray"))
            else:
                self.queue.appendleft(job)
            return
        slot.job, slot.ref = None, None

    def cancel(self) -> None:
        self.queue.clear()
        self.ready.clear()
        for slot in list(self.slots):  # let in-flight jobs finish, unheard
            if slot.ref is not None:
                try:
                    self.ray.get(slot.ref)
                except Exception:  # noqa: BLE001 - a dead worker is replaced
                    self._kill(slot)
                    self.slots.remove(slot)
                    self.slots.append(self._start())
                    continue
            slot.job, slot.ref = None, None

    def _any_up(self) -> _Slot:
        while True:
            up = [s for s in self.slots if s.starting is None]
            if up:
                return up[0]
            self._poll_starting(timeout=1.0)

    def floor(self) -> dict[str, float]:
        return self._call(self.ray.get, self._any_up().actor.floor.remote())

    def info(self) -> dict[str, Any]:
        self._any_up()
        assert self.reference is not None
        return self.reference

    def workers(self) -> list[dict[str, Any]]:
        """Every worker's pid, node and name (waiting for those still starting)."""
        while any(s.starting is not None for s in self.slots):
            self._poll_starting(timeout=1.0)
        return [dict(s.about or {}) for s in self.slots]

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.workers()]

    def describe(self) -> str:
        nodes = {s.about["node"] for s in self.slots if s.about}
        size = f"{len(self.slots)} workers" if self.fixed is not None else f"{len(self.slots)} workers, following the cluster"
        return f"Ray actor pool ({size} on {len(nodes)} node{'s' if len(nodes) != 1 else ''})"

    def close(self) -> None:
        if self.lost:
            return
        for slot in self.slots:
            self._kill(slot)
        if self.started_ray:
            self.ray.shutdown()
