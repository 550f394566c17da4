"""The search loop: ask → [promote] → evaluate → record → tell, then validate on held-out noise.

One driver per search; it alone writes the store. Work proceeds in batches of
``strategy.batch_size`` trials: the strategy's proposals (and successive-halving
promotions) are written ``queued`` together with the strategy's state in one transaction,
marked ``running`` when dispatched, ``complete``/``failed`` with their metrics one
transaction each; the strategy learns from a batch only once all of it is measured, in
trial-number order. So the trials a seeded search makes do not depend on the engine,
the number of workers, or on being killed and resumed at any moment: the store holds
everything the next step depends on.

After the budget (true evaluations on the search noise, baselines and promotions included),
the best ``validation.top_k`` searched schedules and the ``validation.baselines`` best
baselines per NFE are measured at the highest fidelity and on the held-out noise; the
held-out figure picks the winner, which may be a baseline.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from schedsearch.predictors.spectrum import ModelSpectrum, model_spectrum
from schedsearch.solvers import DiffusionModel, Schedule, ScheduleError, SolverError, baseline, load_model
from schedsearch.storage import NewTrial, SearchRecord, Stage, StoreError, TrialRecord, TrialState, TrialStore

from .config import SearchConfig
from .context import HOLDOUT_NOISE, SEARCH_NOISE
from .engines import Engine, EngineLost, Job
from .fidelity import SEARCH_STAGES, level_results, promotions, top_schedules
from .space import SearchSpace
from .strategies import Observation, Strategy, make_strategy

FINISHED = (TrialState.COMPLETE, TrialState.FAILED, TrialState.PRUNED)

STATE_ARTIFACT = "strategy_state"
NOISE_ARTIFACT = "noise_sets"
FLOOR_ARTIFACT = "floor"
MAX_DUPLICATE_ROUNDS = 20
SPECTRUM_DRAWS = 4  # draws whose trajectories the predictor's model spectrum is measured along


class SearchError(Exception):
    """A search that cannot start or continue (name clash, changed noise, nothing left to propose)."""


@dataclass
class SearchProgress:
    """What the progress display is told (the loop prints nothing itself)."""

    on_start: Callable[[int, int], None] = lambda spent, budget: None
    on_result: Callable[[TrialRecord, dict[int, float]], None] = lambda trial, best: None
    on_stage: Callable[[str, int], None] = lambda stage, total: None
    #: refinement's progress in iterations (the stage "refine" counts them): (iterations done, validation loss)
    on_refine: Callable[[int, float | None], None] = lambda advance, loss: None
    on_close: Callable[[], None] = lambda: None
    #: a one-line note on work that is neither an evaluation nor a stage (e.g. measuring the model's spectrum)
    on_note: Callable[[str], None] = lambda text: None


@dataclass
class SearchOutcome:
    search: SearchRecord
    trials: list[TrialRecord]
    objective: str
    floor: dict[str, dict[str, float]] = field(default_factory=dict)


def open_search(store: TrialStore, config: SearchConfig, objective: str) -> tuple[SearchRecord, bool]:
    """Create the search, or reopen it when the name exists with the same config (``resumed`` = True)."""
    assert config.name is not None
    try:
        search = store.get_search(config.name)
    except StoreError:
        return store.create_search(config.name, config.to_dict(), config.model, objective), False
    try:
        stored = SearchConfig.model_validate(search.config)
    except ValueError:
        raise SearchError(f"search {config.name!r}: its stored config is not understood by this version") from None
    if stored.comparable() != config.comparable():
        diff = _first_difference(stored.comparable(), config.comparable())
        raise SearchError(f"a search named {config.name!r} exists with a different config ({diff}); "
                          "choose another --name or resume it with `schedsearch resume`")
    if config.budget != stored.budget or config.refine != stored.refine:
        search = store.update_config(search, config.to_dict())
    return search, True


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: stored {a!r}, given {b!r}"


class SearchRun:
    """Runs (or resumes) one search to its end."""

    def __init__(self, config: SearchConfig, store: TrialStore, engine: Engine,
                 progress: SearchProgress | None = None, model: DiffusionModel | None = None) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.progress = progress or SearchProgress()
        info = engine.info()
        self.objective: str = info["objective"]
        if self.objective not in info["metrics"]:
            raise SearchError(f"objective: {self.objective!r} is not measured for this model "
                              f"(available: {', '.join(info['metrics'])})")
        self.fingerprints: dict[str, str] = info["fingerprints"]
        self.model = model or load_model(config.model, device="cpu")
        self.space = SearchSpace(config.space_spec(), self.model.noise_schedule,
                                 has_data_mean=self.model.data_mean is not None)
        self.levels = tuple(config.fidelity.samples)
        self.search, self.resumed = open_search(store, config, self.objective)
        self.trials: dict[int, TrialRecord] = {}
        self.strategy: Strategy | None = None

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        with _signals_as_interrupt():
            try:
                self.store.set_status(self.search, "running")
                self._check_noise()
                self.store.requeue(self.search)
                self.trials = {t.number: t for t in self.store.trials(self.search)}
                self.strategy = self._build_strategy()
                self.progress.on_start(self._spent(), self.config.budget)
                self._enqueue_baselines()
                self._search()
                self.progress.on_close()
                self._refine()
                floor = self._validate()
                self.store.set_status(self.search, "complete")
                return SearchOutcome(self.store.get_search(self.search.name), self._sorted(), self.objective, floor)
            except (KeyboardInterrupt, EngineLost) as exc:
                if isinstance(exc, KeyboardInterrupt):
                    self.engine.cancel()
                self.store.mark_stale_running(self.search)
                self.store.set_status(self.search, "interrupted")
                raise
            except BaseException:
                self.store.set_status(self.search, "failed")
                raise
            finally:
                self.progress.on_close()
                if self.strategy is not None:
                    self.strategy.close()

    # -- set-up ----------------------------------------------------------------------------

    def _check_noise(self) -> None:
        stored = self.store.get_artifact(self.search, NOISE_ARTIFACT)
        if stored is None:
            self.store.put_artifact(self.search, NOISE_ARTIFACT, b"", {"fingerprints": self.fingerprints})
        elif stored[1].get("fingerprints") != self.fingerprints:
            raise SearchError(f"search {self.search.name!r}: the noise sets drawn now differ from the stored ones "
                              "(another model, or another torch version?); its trials cannot be continued")

    def _build_strategy(self) -> Strategy:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        options = dict(cfg.strategy.options)
        try:
            strategy = make_strategy(cfg.strategy.name, self.space, rng, options, storage=self.store.url,
                                     search_name=self.search.name, measure_spectrum=self._measure_spectrum)
        except TypeError as exc:
            raise SearchError(f"strategy.options: {exc}") from None
        for kind in strategy.artifact_kinds:
            stored = self.store.get_artifact(self.search, kind)
            if stored is not None:
                strategy.load_artifact(kind, *stored)
        artifact = self.store.get_artifact(self.search, STATE_ARTIFACT)
        pending = [t.meta for t in self.trials.values() if t.state is TrialState.QUEUED and t.stage is Stage.SEARCH]
        strategy.restore(self._observations(), None if artifact is None else artifact[0], pending)
        return strategy

    def _measure_spectrum(self) -> ModelSpectrum:
        """The model's spectrum along its trajectories from a few draws of the search's seed (for the predictor)."""
        self.progress.on_note(f"measuring the model's spectrum for the predictor ({SPECTRUM_DRAWS} draws)")
        try:
            return model_spectrum(self.model, self.config.seed, self.config.guidance_scale, SPECTRUM_DRAWS)
        except SolverError as exc:
            raise SearchError(f"strategy.options.spectrum: the model's spectrum cannot be measured ({exc}); "
                              "set spectrum: false") from None

    def _enqueue_baselines(self) -> None:
        if any(t.stage is Stage.BASELINE for t in self.trials.values()):
            return
        new: list[NewTrial] = []
        seen: set[str] = set()
        for nfe in self.config.nfe:
            for solver in self.config.baselines.solvers:
                for grid in self.config.baselines.grids:
                    try:
                        s = baseline(solver, nfe, self.model, grid=grid)
                        s.check_for(self.model.noise_schedule)
                    except ScheduleError:
                        continue  # e.g. a grid this model does not have
                    if s.canonical_hash() in seen:
                        continue
                    seen.add(s.canonical_hash())
                    new.append(_new_trial(s, self.levels[0], Stage.BASELINE, {"baseline": solver, "grid": grid}))
        new = new[: max(0, self.config.budget - self._spent())]
        if new:
            for t in self.store.add_trials(self.search, new):
                self.trials[t.number] = t

    # -- the search ------------------------------------------------------------------------

    def _spent(self) -> int:
        return sum(1 for t in self.trials.values() if t.stage in SEARCH_STAGES and not t.meta.get("validation"))

    def _search(self) -> None:
        batch_size = self.config.strategy.batch_size
        while True:
            queued = [t for t in self._sorted() if t.state is TrialState.QUEUED and t.stage is not Stage.HOLDOUT]
            if queued:
                self._run_batch(queued)
                continue
            room = self.config.budget - self._spent()
            if room <= 0:
                return
            batch = self._promotions(min(room, batch_size))
            batch += self._proposals(min(room, batch_size) - len(batch))
            if not batch:
                return  # the space offers nothing new
            state = self.strategy.state() if self.strategy is not None else b""
            artifacts = self.strategy.artifacts() if self.strategy is not None else {}
            artifacts[STATE_ARTIFACT] = (state, {"strategy": self.config.strategy.name})
            records = self.store.add_trials(self.search, batch, artifacts=artifacts)
            for t in records:
                self.trials[t.number] = t

    def _promotions(self, limit: int) -> list[NewTrial]:
        if limit <= 0 or len(self.levels) < 2:
            return []
        out = []
        for trial, level in promotions(self._sorted(), self.levels, self.config.fidelity.eta)[:limit]:
            out.append(NewTrial(trial.schedule, trial.schedule_hash, trial.nfe, fidelity=level, stage=Stage.PROMOTE,
                                meta={"promoted_from": trial.number}))
        return out

    def _proposals(self, n: int) -> list[NewTrial]:
        assert self.strategy is not None
        if n <= 0:
            return []
        known = {(t.schedule_hash, t.fidelity): t for t in self._sorted() if t.stage in SEARCH_STAGES}
        out: list[NewTrial] = []
        fresh: set[str] = set()
        for _ in range(MAX_DUPLICATE_ROUNDS):
            for p in self.strategy.ask(n - len(out)):
                h = p.schedule.canonical_hash()
                seen = known.get((h, self.levels[0]))
                if seen is not None and seen.state in FINISHED:
                    self.strategy.tell([Observation(seen.number, p.schedule, seen.objective, dict(p.meta))])
                elif h in fresh or seen is not None:
                    self.strategy.tell([Observation(-1, p.schedule, None, dict(p.meta))])
                else:
                    fresh.add(h)
                    out.append(_new_trial(p.schedule, self.levels[0], Stage.SEARCH, p.meta))
            if len(out) >= n:
                break
        return out

    def _run_batch(self, batch: Sequence[TrialRecord]) -> None:
        """Measure every trial of the batch, record each result, then tell the strategy (number order)."""
        noise = {Stage.HOLDOUT: HOLDOUT_NOISE}
        self.store.start_trials(self.search, [t.number for t in batch], self.engine.describe())
        for t in batch:
            self.engine.submit(Job(t.number, dict(t.schedule), int(t.fidelity or self.levels[0]),
                                   noise.get(t.stage, SEARCH_NOISE)))
        left = {t.number: t for t in batch}
        while left:
            for done in self.engine.wait():
                trial = left.pop(done.number, None)
                if trial is None:
                    continue
                r = done.result
                state = TrialState.FAILED if r.failed else TrialState.COMPLETE
                metrics = {k: v for k, v in r.metrics.items() if v == v}  # drop NaN (not JSON)
                objective, error = r.objective, r.error
                if done.pruned and not r.failed:  # its metrics are at fewer samples: kept, but never ranked
                    state, objective = TrialState.PRUNED, None
                    metrics["samples"] = r.num_samples
                    error = (f"stopped early by ASHA at {r.num_samples} of {trial.fidelity} samples "
                             f"({self.objective} {r.objective:.4g} there)")
                record = self.store.finish_trial(trial, state, metrics, objective, error, r.seconds,
                                                 worker=done.worker)
                self.trials[record.number] = record
                self.progress.on_result(record, self._best_per_nfe())
        if self.strategy is not None:
            learn = [t for t in sorted(batch, key=lambda t: t.number) if t.stage in (Stage.BASELINE, Stage.SEARCH)]
            self.strategy.tell(self._observations(learn))

    def _observations(self, trials: Sequence[TrialRecord] | None = None) -> list[Observation]:
        pool = self._sorted() if trials is None else [self.trials[t.number] for t in trials]
        out = []
        for t in pool:
            if (t.stage in (Stage.BASELINE, Stage.SEARCH) and t.fidelity == self.levels[0]
                    and t.state in FINISHED):  # a pruned trial is learnt from as a failed one: the worst
                out.append(Observation(t.number, Schedule.from_dict(t.schedule), t.objective, dict(t.meta)))
        return out

    def _best_per_nfe(self) -> dict[int, float]:
        best: dict[int, float] = {}
        for nfe in self.config.nfe:
            done = level_results(self.trials.values(), self.levels[0], nfe)
            if done:
                best[nfe] = float(done[0].objective)  # type: ignore[arg-type]
        return best

    def _sorted(self) -> list[TrialRecord]:
        return [self.trials[n] for n in sorted(self.trials)]

    # -- refinement ------------------------------------------------------------------------

    def _refine(self) -> None:
        """Refine the best searched schedules (and baselines) per NFE against the teacher, each once: the refined
        schedule becomes a trial (stage refine) measured at the highest fidelity on the search noise; a
        refinement that fails or learns nothing is kept as a failed trial with its reason."""
        cfg = self.config.refine
        if not cfg.enabled:
            return
        ranked = [t for t in self.trials.values() if not t.meta.get("validation")]
        sources: list[TrialRecord] = []
        for nfe in self.config.nfe:
            sources += top_schedules(ranked, nfe, cfg.top_k, (Stage.SEARCH,))
            sources += top_schedules(ranked, nfe, cfg.baselines, (Stage.BASELINE,))
        done = {t.meta.get("refined_from") for t in self.trials.values() if t.stage is Stage.REFINE}
        todo = {t.number: t for t in sources if t.number not in done}
        if todo:
            self.progress.on_stage("refine", len(todo) * cfg.iterations)
            options = cfg.options()
            told = dict.fromkeys(todo, 0)  # iterations reported per job

            def report(number: int, iteration: int, loss: float | None) -> None:
                if number in told and iteration > told[number]:
                    self.progress.on_refine(iteration - told[number], loss)
                    told[number] = iteration

            self.engine.on_refine_progress(report)
            for t in todo.values():
                self.engine.submit(Job(t.number, dict(t.schedule), 0, "train", task="refine", options=options))
            try:
                while todo:
                    for result in self.engine.wait():
                        source = todo.pop(result.number, None)
                        if source is not None:
                            report(result.number, cfg.iterations, None)  # stopped early, or run elsewhere
                            self._record_refined(source, result)
            finally:
                self.engine.on_refine_progress(None)
            self.progress.on_close()
        queued = [t for t in self._sorted() if t.state is TrialState.QUEUED and t.stage is Stage.REFINE]
        if queued:
            self.progress.on_stage("refined", len(queued))
            self._run_batch(queued)
            self.progress.on_close()

    def _record_refined(self, source: TrialRecord, result: Any) -> None:
        out = dict(result.output or {})
        meta: dict[str, Any] = {"refined_from": source.number,
                                "refine": {k: out.get(k) for k in ("initial_loss", "loss", "train_loss", "iterations",
                                                                   "best_iteration", "seconds")}}
        error = out.get("error") or result.result.error
        refined = None
        if error is None:
            refined = Schedule.from_dict(out["schedule"])
            if not out.get("best_iteration"):
                error = (f"refinement did not lower the validation loss ({out.get('initial_loss'):.4g}) "
                         f"in {out.get('iterations')} iterations")
        if error is not None or refined is None:
            failed = NewTrial(source.schedule, source.schedule_hash, source.nfe, fidelity=None, stage=Stage.REFINE,
                              meta=meta)
            records = self.store.record_trials(self.search, [(failed, {}, None, error)], worker=result.worker)
        else:
            new = _new_trial(refined, self.levels[-1], Stage.REFINE, meta)
            records = self.store.add_trials(self.search, [new])
        for t in records:
            self.trials[t.number] = t

    # -- validation ------------------------------------------------------------------------

    def _validate(self) -> dict[str, dict[str, float]]:
        cfg = self.config.validation
        top = self.levels[-1]
        ranked = [t for t in self.trials.values() if not t.meta.get("validation")]
        chosen: list[TrialRecord] = []
        refined = self.config.refine.top_k + self.config.refine.baselines
        for nfe in self.config.nfe:
            chosen += top_schedules(ranked, nfe, cfg.top_k, (Stage.SEARCH,))
            chosen += top_schedules(ranked, nfe, cfg.baselines, (Stage.BASELINE,))
            chosen += top_schedules(ranked, nfe, refined, (Stage.REFINE,))
        have = {(t.schedule_hash, t.fidelity, t.stage is Stage.HOLDOUT) for t in self.trials.values()}
        new: list[NewTrial] = []
        for t in chosen:
            origin = {"validation": True, "of": t.number}
            if (t.schedule_hash, top, False) not in have:
                new.append(NewTrial(t.schedule, t.schedule_hash, t.nfe, fidelity=top, stage=Stage.PROMOTE, meta=origin))
            if (t.schedule_hash, cfg.samples, True) not in have:
                new.append(NewTrial(t.schedule, t.schedule_hash, t.nfe, fidelity=cfg.samples, stage=Stage.HOLDOUT,
                                    meta=origin))
        if new:
            for t in self.store.add_trials(self.search, new):
                self.trials[t.number] = t
        queued = [t for t in self._sorted() if t.state is TrialState.QUEUED]
        if queued:
            self.progress.on_stage("validation", len(queued))
            self._run_batch(queued)
            self.progress.on_close()
        return self._floor()

    def _floor(self) -> dict[str, dict[str, float]]:
        stored = self.store.get_artifact(self.search, FLOOR_ARTIFACT)
        if stored is not None:
            return dict(stored[1])
        floor = {HOLDOUT_NOISE: {m: v for m, v in self.engine.floor().items() if v == v}}
        self.store.put_artifact(self.search, FLOOR_ARTIFACT, b"", floor)
        return floor


def _new_trial(schedule: Schedule, fidelity: int, stage: Stage, meta: Any) -> NewTrial:
    return NewTrial(schedule.to_dict(), schedule.canonical_hash(), schedule.nfe, fidelity=fidelity, stage=stage,
                    meta=dict(meta))


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cluster scheduler's stop) ends the search like Ctrl-C: cleanly, resumable."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["SearchError", "SearchOutcome", "SearchProgress", "SearchRun", "open_search"]
