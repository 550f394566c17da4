"""The Ray actor pool on a real local Ray runtime: same trials as in-process, dead workers cost nothing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from schedsearch.search.context import SEARCH_NOISE, EvaluationSpec
from schedsearch.search.engines import Job, LocalEngine
from schedsearch.search.engines.ray_pool import RayEngine
from schedsearch.search.loop import SearchProgress, SearchRun
from schedsearch.solvers import baseline, load_model
from schedsearch.storage import Stage, TrialState, TrialStore
from tests.test_search import OPTIONS, config, fingerprint


def _search(cfg, url, engine):
    store = TrialStore.open(url)
    try:
        return SearchRun(cfg, store, engine).run()
    finally:
        store.close()


@pytest.mark.parametrize("strategy", ["evolution", "guided"])
def test_actor_pool_gives_the_same_trials_as_in_process(ray_runtime, tmp_path, strategy):
    refine = {"top_k": 1, "iterations": 30, "samples": 200, "batch_size": 100} if strategy == "evolution" else {}
    cfg = config(budget=28, strategy={"name": strategy, "options": OPTIONS.get(strategy, {})}, refine=refine)
    local = _search(cfg, f"sqlite:///{tmp_path / 'local.db'}", LocalEngine(cfg.evaluation_spec()))
    pool = RayEngine(cfg.evaluation_spec(), num_workers=2)
    try:
        remote = _search(cfg, f"sqlite:///{tmp_path / 'ray.db'}", pool)
    finally:
        pool.close()
    assert fingerprint(remote.trials) == fingerprint(local.trials)
    workers = {t.worker for t in remote.trials}
    assert len(workers) == 2 and all(w.startswith("ray:") for w in workers)  # both actors measured trials
    if strategy == "evolution":  # the refinement ran on an actor too, to the same refined schedule
        assert [t.worker.startswith("ray:") for t in remote.trials if t.stage is Stage.REFINE] == [True]
    if strategy == "guided":  # the predictor screened proposals on this engine too
        assert any(t.meta.get("op") == "guided" for t in remote.trials)


def test_a_worker_killed_mid_trial_costs_only_that_trial(ray_runtime, tmp_path):
    spec = EvaluationSpec(model="builtin:gmm-8d", search_samples=8000, holdout_samples=100, reference_steps=40)
    model = load_model("builtin:gmm-8d")
    slow = baseline("unipc_bh2", 30, model).to_dict()  # about 2 s per evaluation on a CPU (the exact MMD)
    pool = RayEngine(spec, num_workers=2)
    try:
        pids = pool.worker_pids()
        for n in range(3):
            pool.submit(Job(n, slow, 8000, SEARCH_NOISE))
        time.sleep(1.0)
        os.kill(pids[0], signal.SIGKILL)  # its job is in flight
        results = {}
        while pool.pending:
            for r in pool.wait(timeout=300):
                results[r.number] = r
        assert sorted(results) == [0, 1, 2]
        assert all(not r.result.failed for r in results.values())
        assert len({round(r.result.objective, 9) for r in results.values()}) == 1  # the same schedule, same noise
        assert sum(pool.deaths.values()) == 1
        assert pids[0] not in pool.worker_pids()
    finally:
        pool.close()


def test_search_completes_when_a_worker_dies(ray_runtime, tmp_path):
    cfg = config(budget=32)
    pool = RayEngine(cfg.evaluation_spec(), num_workers=2)
    victim = pool.worker_pids()[1]
    seen = []

    def on_result(trial, best):
        seen.append(trial.number)
        if len(seen) == 10:
            os.kill(victim, signal.SIGKILL)

    store = TrialStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        outcome = SearchRun(cfg, store, pool, SearchProgress(on_result=on_result)).run()
        assert sum(pool.deaths.values()) >= 1 and victim not in pool.worker_pids()
    finally:
        store.close()
        pool.close()
    trials = outcome.trials
    assert all(t.state is TrialState.COMPLETE for t in trials)
    spent = [t for t in trials if t.stage in (Stage.BASELINE, Stage.SEARCH, Stage.PROMOTE)
             and not t.meta.get("validation")]
    assert len(spent) == 32
    assert len({(t.schedule_hash, t.fidelity, t.stage is Stage.HOLDOUT) for t in trials}) == len(trials)
