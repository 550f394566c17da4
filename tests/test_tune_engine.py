"""The Ray Tune engine on a real local Ray runtime: ASHA stops schedules early on the sample count,
the store records them as pruned at the samples they reached, the rest measure exactly what the
in-process engine measures, and the held-out validation is never cut short."""

from __future__ import annotations

import pytest

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine, make_engine
from schedsearch.search.engines.tune import rungs
from schedsearch.search.loop import SearchRun
from schedsearch.storage import Stage, TrialState, TrialStore

CONFIG = {
    "name": "tuned", "model": "builtin:gmm-8d", "nfe": 4, "budget": 18, "seed": 2,
    "strategy": {"name": "random", "batch_size": 12},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [900]},
    "validation": {"top_k": 1, "baselines": 1, "samples": 900, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"kind": "tune", "threads": 1, "asha_eta": 3, "asha_levels": 3},
}


def test_rungs_are_ashas_milestones():
    assert rungs(900, 3, 3) == [100, 300, 900]
    assert rungs(1000, 3, 3) == [112, 336, 1000]
    assert rungs(1000, 2, 4) == [125, 250, 500, 1000]
    assert rungs(500, 3, 1) == [500]


def test_a_tune_search_prunes_on_the_sample_count_and_measures_the_rest_exactly(ray_runtime, tmp_path):
    cfg = parse_config(CONFIG)
    engine = make_engine(cfg)
    store = TrialStore.open(f"sqlite:///{tmp_path / 'tune.db'}")
    try:
        assert "ASHA" in engine.describe()
        outcome = SearchRun(cfg, store, engine).run()
        best = store.best_per_nfe(outcome.search)[4]
    finally:
        engine.close()
        store.close()
    trials = outcome.trials
    assert outcome.search.status == "complete"
    budgeted = [t for t in trials if t.stage is not Stage.HOLDOUT and not t.meta.get("validation")]
    assert len(budgeted) == cfg.budget
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAILED, TrialState.PRUNED) for t in trials)
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert pruned, [t.state for t in trials]  # 12 random schedules at once: ASHA stops some
    for t in pruned:  # kept with the metrics of the rung they reached, never ranked
        assert t.objective is None and t.metrics["mmd"] > 0 and t.fidelity == 900 and t.metrics["samples"] in (100, 300)
        assert t.error.startswith("stopped early by ASHA at 100 of 900") or "at 300 of 900" in t.error, t.error
    holdout = [t for t in trials if t.stage is Stage.HOLDOUT]
    assert holdout and all(t.state is TrialState.COMPLETE for t in holdout)  # validation runs to the end
    assert best.stage is Stage.HOLDOUT and best.state is TrialState.COMPLETE
    assert all(t.worker.startswith("tune:ray:") for t in trials if t.state is not TrialState.FAILED)

    local = LocalEngine(cfg.evaluation_spec())  # what the in-process engine measures for the same schedules
    for t in [t for t in trials if t.state is TrialState.COMPLETE][:6]:
        noise = "holdout" if t.stage is Stage.HOLDOUT else "search"
        direct = local.context.evaluate(t.schedule, t.fidelity, noise)
        assert t.objective == pytest.approx(direct.objective, rel=1e-5, abs=1e-9)


def test_a_tune_trial_whose_worker_is_killed_is_retried(ray_runtime):
    import os
    import signal
    import subprocess
    import threading
    import time

    from schedsearch.search.context import SEARCH_NOISE, EvaluationSpec
    from schedsearch.search.engines import Job
    from schedsearch.search.engines.tune import TuneEngine
    from schedsearch.solvers import baseline, load_model

    spec = EvaluationSpec(model="builtin:gmm-8d", search_samples=6000, holdout_samples=100, reference_steps=40)
    slow = baseline("unipc_bh2", 30, load_model("builtin:gmm-8d")).to_dict()  # about 1 s per evaluation

    def actors() -> set[int]:
        # a trial actor's title while it runs a step: ray::<trainable>.train (with_resources wraps ours)
        out = subprocess.run(["pgrep", "-f", r"^ray::(ResourceTrainable|EvaluateJob)\.train"], capture_output=True,
                             text=True).stdout.split()
        return {int(pid) for pid in out}

    before = actors()  # idle actors another test left behind are not this engine's
    engine = TuneEngine(spec, num_workers=2, levels=1, max_failures=2)
    killed = []

    def kill_a_trial_actor() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            ours = sorted(actors() - before)
            if ours:
                time.sleep(0.3)  # its evaluation is under way
                try:
                    os.kill(ours[0], signal.SIGKILL)
                    killed.append(ours[0])
                except ProcessLookupError:
                    before.add(ours[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_trial_actor)
    killer.start()
    try:
        for n in range(3):
            engine.submit(Job(n, slow, 6000, SEARCH_NOISE))
        results = engine.wait()
    finally:
        killer.join()
        engine.close()
    assert killed
    assert sorted(r.number for r in results) == [0, 1, 2]
    assert not any(r.worker.endswith(f":{killed[0]}") for r in results)  # its job was measured again elsewhere
    assert all(not r.result.failed and not r.pruned for r in results), [r.result.error for r in results]
    assert len({round(r.result.objective, 9) for r in results}) == 1  # the same schedule, same noise
