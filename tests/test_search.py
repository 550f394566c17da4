"""The search loop on a real store and a real evaluator (Gaussian mixture, exact MMD), in-process."""

from __future__ import annotations

from collections import Counter

import pytest

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.fidelity import SEARCH_STAGES
from schedsearch.search.loop import SearchError, SearchProgress, SearchRun
from schedsearch.search.queries import export_best
from schedsearch.search.results import summarize
from schedsearch.storage import Stage, TrialState, TrialStore

BASE = {
    "model": "builtin:gmm-8d", "nfe": 4, "budget": 40, "seed": 0,
    "strategy": {"name": "evolution", "batch_size": 4},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [200, 800], "eta": 3},
    "validation": {"top_k": 2, "baselines": 2, "samples": 1000, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"threads": 1},
}


def config(**changes):
    data = {**BASE, "name": "mix"}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


@pytest.fixture(scope="module")
def engine():
    return LocalEngine(config().evaluation_spec())


def run(cfg, url, engine, progress=None):
    store = TrialStore.open(url)
    try:
        return SearchRun(cfg, store, engine, progress).run(), store.best_per_nfe(store.get_search(cfg.name))
    finally:
        store.close()


def fingerprint(trials):
    return [(t.number, t.schedule_hash, t.stage.value, t.fidelity, t.state.value, t.objective) for t in trials]


def test_search_spends_its_budget_and_picks_the_winner_on_held_out_noise(store_url, engine):
    cfg = config()
    outcome, best = run(cfg, store_url, engine)
    trials = outcome.trials
    assert outcome.search.status == "complete"
    budgeted = [t for t in trials if t.stage in SEARCH_STAGES and not t.meta.get("validation")]
    assert len(budgeted) == cfg.budget
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAILED) for t in trials)
    baselines = [t for t in trials if t.stage is Stage.BASELINE]
    assert len(baselines) == 6 and [t.number for t in baselines] == list(range(6))  # evaluated first
    keys = Counter((t.schedule_hash, t.fidelity, t.stage is Stage.HOLDOUT) for t in trials)
    assert max(keys.values()) == 1  # never the same schedule twice at one fidelity on one noise set
    promoted = [t for t in trials if t.stage is Stage.PROMOTE and not t.meta.get("validation")]
    assert promoted and all(t.fidelity == 800 for t in promoted)
    for t in promoted:  # a promotion re-measures a schedule that was among the best third of its level
        source = next(s for s in trials if s.number == t.meta["promoted_from"])
        assert source.schedule_hash == t.schedule_hash and source.fidelity == 200
    holdout = [t for t in trials if t.stage is Stage.HOLDOUT]
    assert len(holdout) == 4 and all(t.fidelity == 1000 for t in holdout)
    winner = min((t for t in holdout if t.objective is not None), key=lambda t: t.objective)
    assert best[4].number == winner.number
    exported = export_best(TrialStore.open(store_url), outcome.search, 4)
    assert exported["provenance"]["trial"] == winner.number and exported["provenance"]["stage"] == "holdout"
    summary = summarize(trials, outcome.objective, outcome.floor)[4]
    assert summary.winner.holdout_trial == winner.number
    assert summary.best_baseline is not None and summary.winner.holdout <= summary.best_baseline.holdout
    assert summary.floor_holdout is not None and summary.floor_holdout < summary.best_baseline.holdout


class Stop(Exception):
    pass


OPTIONS = {"generational": {"population": 10, "keep": 3, "mutants": 4, "crossovers": 2},
           "guided": {"initial": 10, "round_size": 6, "candidates": 200, "epochs": 60, "spectrum": True}}


@pytest.mark.parametrize("strategy", ["evolution", "generational", "random", "guided"])
def test_a_search_interrupted_anywhere_resumes_to_the_same_trials(tmp_path, engine, strategy):
    options = OPTIONS.get(strategy, {})
    cfg = config(strategy={"name": strategy, "options": options})
    whole, _ = run(cfg, f"sqlite:///{tmp_path / 'whole.db'}", engine)
    url = f"sqlite:///{tmp_path / 'cut.db'}"
    cuts = iter([3, 1, 7, 2, 11, 5])
    count = {"n": 0, "stop": 0}

    def on_result(trial, best):
        count["n"] += 1
        if count["n"] == count["stop"]:
            raise KeyboardInterrupt

    interrupted = 0
    while True:
        count["n"], count["stop"] = 0, next(cuts, 10**9)
        try:
            outcome, _ = run(cfg, url, engine, SearchProgress(on_result=on_result))
            break
        except KeyboardInterrupt:
            interrupted += 1
            store = TrialStore.open(url)
            assert store.get_search("mix").status == "interrupted"
            assert not store.trials(store.get_search("mix"), state=TrialState.RUNNING)
            store.close()
    assert interrupted == 6
    assert fingerprint(outcome.trials) == fingerprint(whole.trials)
    if strategy == "guided":  # its predictor is in the store, fitted on the trials it names
        store = TrialStore.open(url)
        data, meta = store.get_artifact(store.get_search("mix"), "predictor")
        store.close()
        assert data and meta["round"] >= 2 and set(meta["trials"]) <= {t.number for t in whole.trials}
        assert len(meta["checkpoint"]["spectrum"]["curves"]) > 10  # it reads the model's measured spectrum
        assert [t.meta["op"] for t in whole.trials if t.meta.get("op") in ("guided", "explore")]


def test_same_name_with_another_config_is_refused_and_a_larger_budget_continues(tmp_path, engine):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first, _ = run(config(budget=24), url, engine)
    with pytest.raises(SearchError, match=r"exists with a different config \(nfe: stored \[4\], given \[5\]\)"):
        run(config(budget=24, nfe=5), url, engine)
    more, _ = run(config(budget=32), url, engine)
    assert fingerprint(more.trials)[: 24] == fingerprint(first.trials)[: 24]
    spent = [t for t in more.trials if t.stage in SEARCH_STAGES and not t.meta.get("validation")]
    assert len(spent) == 32


def test_optuna_study_lives_in_the_same_database(tmp_path, engine):
    import optuna

    url = f"sqlite:///{tmp_path / 'o.db'}"
    outcome, _ = run(config(strategy={"name": "tpe"}, budget=28), url, engine)
    study = optuna.load_study(study_name="schedsearch:mix", storage=url)
    asked = [t for t in outcome.trials if t.stage is Stage.SEARCH]
    assert asked and {t.meta["optuna_trial"] for t in asked} <= {t.number for t in study.trials}
    told = [t for t in study.trials if t.state.is_finished()]
    assert len(told) >= len(asked) + 6  # its own proposals and the baselines, added once


def test_nsga2_sweeps_quality_against_nfe(tmp_path, engine):
    cfg = config(nfe=[3, 5], strategy={"name": "nsga2"}, budget=36)
    outcome, best = run(cfg, f"sqlite:///{tmp_path / 'n.db'}", LocalEngine(cfg.evaluation_spec()))
    assert set(best) == {3, 5}
    summaries = summarize(outcome.trials, outcome.objective, outcome.floor)
    assert set(summaries) == {3, 5} and all(s.winner is not None for s in summaries.values())


def test_noise_sets_that_changed_are_refused(tmp_path, engine):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    run(config(budget=12), url, engine)
    store = TrialStore.open(url)
    search = store.get_search("mix")
    store.put_artifact(search, "noise_sets", b"", {"fingerprints": {"search": "x", "holdout": "y"}})
    store.close()
    with pytest.raises(SearchError, match="noise sets drawn now differ from the stored ones"):
        run(config(budget=12), url, engine)


def test_a_guided_search_whose_model_spectrum_cannot_be_measured_stops_with_one_line(tmp_path):
    """The search loop's spectrum measurer (what the guided strategy calls at its first fit) turns the model's
    refusal into a SearchError naming the option to turn off."""
    config = parse_config({"name": "g", "model": "builtin:gmm-ring", "nfe": [4], "budget": 10, "seed": 0,
                           "guidance_scale": 2.0, "strategy": {"name": "guided", "options": {"spectrum": True}}})
    store = TrialStore.open(f"sqlite:///{tmp_path / 'trials.db'}")
    try:
        run = SearchRun(config, store, LocalEngine(config.evaluation_spec()))
        with pytest.raises(SearchError) as err:
            run._measure_spectrum()  # the mixture has no unconditional input for guidance
    finally:
        store.close()
    message = str(err.value)
    assert message.startswith("strategy.options.spectrum: the model's spectrum cannot be measured (guidance_scale")
    assert message.endswith("set spectrum: false") and "\n" not in message
