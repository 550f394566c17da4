"""The learned predictor on real digits search trials: network kinds, held-out τ per NFE against trivial
rankers and against the measurement's own noise, τ by training-set size, and NFE-5 → NFE-6 transfer.

The data are the trials of four real digits searches (S³ evolution, FID on 250 draws of the
search noise; NFE 4-6 and NFE 5-6, two seeds each, 2,000 trials together), run here unless
``--data`` names a database that holds them. Every τ is Kendall's τ-b between predicted scores and measured
FID on trials the predictor never saw.

- kinds: 5-fold τ, fit seconds, seconds to rank 10,000 new candidates (median of three sets), for ``pool`` and ``lstm`` ensembles,
  one ``pool`` network, and ones without the model spectrum's or the Gaussian probe's rows (``--kinds``,
  ``kind[:N][:noprobe][:nospectrum]``); every predictor reads the model's spectrum (measured once, seed 0) unless
  it says ``nospectrum``;
- per NFE: 5-fold τ of the predictor and of the trivial rankers "higher order is better" and
  "closer to the uniform-λ grid is better";
- noise ceiling: ``--ceiling`` trials re-measured on held-out noise (seed 1,
  ``--ceiling-samples`` draws: a less noisy stand-in for the true objective). τ(search FID,
  held-out FID) is what a perfect memory of the training labels would score; the predictor's
  τ to the held-out FID is shown beside it;
- training size: τ on a fixed held-out fifth with 25 … all of the rest;
- transfer: an NFE-5 predictor fine-tuned with 50 NFE-6 trials (on them alone, and on them
  beside the NFE-5 trials it learnt from) against one trained from scratch on 200 NFE-6
  trials, all tested on the other NFE-6 trials;
- speed: seconds to rank 10,000 new candidates (``--speed-sets`` sets, min and median, the share spent
  encoding them) against the one-second target — bred as a search breeds them and fresh random ones —
  and the seconds to breed and decode them.

    .venv/bin/python benchmarks/predictor.py                         # runs the data searches (≈ 2 h)
    .venv/bin/python benchmarks/predictor.py --data sqlite:///runs.db
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from schedsearch.predictors.encoding import encode
from schedsearch.predictors.evaluation import cross_validate
from schedsearch.predictors.predictor import Predictor, PredictorConfig, kendall_tau
from schedsearch.predictors.spectrum import ModelSpectrum, model_spectrum
from schedsearch.search.config import parse_config
from schedsearch.search.context import HOLDOUT_NOISE, build_context
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.search.queries import measured_schedules, open_read_only
from schedsearch.search.space import SearchSpace
from schedsearch.solvers import NoiseSchedule, load_model
from schedsearch.storage import TrialStore

SEARCHES = {"digits-data": ([4, 5, 6], 600, 3), "digits-data-2": ([5, 6], 400, 4),
            "digits-data-3": ([4, 5, 6], 600, 5), "digits-data-4": ([5, 6], 400, 6)}


def data_config(name: str) -> dict:
    nfe, budget, seed = SEARCHES[name]
    return {"name": name, "model": "builtin:digits", "nfe": nfe, "budget": budget, "seed": seed,
            "space": {"free": "usf"}, "strategy": {"name": "evolution", "batch_size": 8, "options": {"initial": 60}},
            "fidelity": {"samples": [250]}, "validation": {"top_k": 1, "baselines": 1, "samples": 250, "seed": 1}}


def ensure_data(url: str) -> None:
    store = TrialStore.open(url)
    try:
        for name in SEARCHES:
            config = parse_config(data_config(name))
            print(f"data: search {name} ({config.budget} evaluations) ...", flush=True)
            SearchRun(config, store, LocalEngine(config.evaluation_spec())).run()  # resumes / returns if complete
    finally:
        store.close()


def load(url: str) -> tuple[list, np.ndarray]:
    store = open_read_only(url)
    schedules, objectives = [], []
    try:
        for name in SEARCHES:
            s, o = measured_schedules(store, store.get_search(name))
            schedules += s
            objectives += o
    finally:
        store.close()
    return schedules, np.asarray(objectives)


@dataclass(frozen=True)
class Env:
    """The digits model's noise schedule and its measured spectrum (what every predictor here reads)."""

    ns: NoiseSchedule
    spectrum: ModelSpectrum


def fit(env: Env, schedules, objectives, cfg: PredictorConfig, seed: int = 0, predictor: Predictor | None = None,
        epochs: int | None = None, spectrum: bool = True) -> Predictor:
    p = predictor or Predictor(env.ns, cfg, seed=seed, spectrum=env.spectrum if spectrum else None)
    p.fit(list(schedules), list(objectives), torch.Generator().manual_seed(seed), epochs=epochs)
    return p


def section_kinds(env: Env, schedules, objectives, space: SearchSpace, kinds: list[str]) -> dict:
    """Prints the table; returns the cross-validations by config (the per-NFE section reuses the default's)."""
    print("\n## network kinds (5-fold held-out τ, all trials; kind:N = an ensemble of N, default 5; "
          ":noprobe = without the Gaussian probe's rows, :nospectrum = without the model spectrum's)")
    rng = np.random.default_rng(0)
    # three sets of 10,000 new random schedules: a search ranks schedules it has not seen (the memos of step
    # structures carry over from set to set, as from round to round of a search)
    sets = [[space.decode(space.random(rng)) for _ in range(10_000)] for _ in range(3)]
    print(f"{'kind':<15}{'τ':>14}{'fit s (4/5 of data)':>22}{'rank 10,000 s (median of 3 sets)':>35}")
    done = {}
    for name in kinds:
        kind, size, *flags = f"{name}:".split(":")  # "pool", "pool:1", "pool:1:noprobe:nospectrum", …
        cfg = PredictorConfig(kind=kind, ensemble=int(size or PredictorConfig.ensemble), probe="noprobe" not in flags)
        spectrum = "nospectrum" not in flags
        cv = done[cfg, spectrum] = cross_validate(schedules, objectives, env.ns, cfg, 5, 0,
                                                  spectrum=env.spectrum if spectrum else None)
        n = int(len(schedules) * 0.8)
        start = time.perf_counter()
        p = fit(env, schedules[:n], objectives[:n], cfg, spectrum=spectrum)
        fit_s = time.perf_counter() - start
        seconds = []
        for candidates in sets:
            start = time.perf_counter()
            p.predict(candidates)
            seconds.append(time.perf_counter() - start)
        print(f"{name:<15}{cv.tau:>8.3f} ± {cv.tau_std:.3f}{fit_s:>22.1f}{float(np.median(seconds)):>35.2f}", flush=True)
    return done


def section_per_nfe(env: Env, schedules, objectives, done: dict) -> None:
    print("\n## held-out τ per NFE (5-fold), predictor against trivial rankers")
    cv = done.get((PredictorConfig(), True)) or cross_validate(schedules, objectives, env.ns, PredictorConfig(), 5, 0,
                                                               spectrum=env.spectrum)
    print(f"{'NFE':<5}{'trials':>7}{'predictor':>11}{'higher-order':>14}{'uniform-λ':>11}")
    nfes = np.asarray([s.nfe for s in schedules])
    for nfe, tau in cv.tau_per_nfe.items():
        print(f"{nfe:<5}{int((nfes == nfe).sum()):>7}{tau:>11.3f}{cv.trivial_per_nfe['higher_order'][nfe]:>14.3f}"
              f"{cv.trivial_per_nfe['uniform_lambda'][nfe]:>11.3f}")
    print(f"{'all':<5}{len(schedules):>7}{cv.tau:>11.3f}{cv.trivial['higher_order']:>14.3f}"
          f"{cv.trivial['uniform_lambda']:>11.3f}", flush=True)


def section_ceiling(env: Env, schedules, objectives, count: int, samples: int) -> None:
    print(f"\n## noise ceiling: {count} trials re-measured on held-out noise (seed 1, {samples} samples)")
    config = data_config("digits-data")
    config["validation"]["samples"] = samples
    context = build_context(parse_config(config).evaluation_spec())
    rng = np.random.default_rng(1)
    pick = rng.choice(len(schedules), size=min(count, len(schedules)), replace=False)
    rest = np.setdiff1d(np.arange(len(schedules)), pick)
    held = np.asarray([context.evaluate(schedules[i].to_dict(), samples, HOLDOUT_NOISE).objective for i in pick],
                      dtype=np.float64)
    ok = np.isfinite(held)
    p = fit(env, [schedules[i] for i in rest], objectives[rest], PredictorConfig())
    pred = p.predict([schedules[i] for i in pick])
    print(f"τ(search FID, held-out FID)       {kendall_tau(objectives[pick][ok], held[ok]):.3f}   "
          "(the measurement's own agreement: a perfect memory of the training label scores this)")
    print(f"τ(predictor, held-out FID)        {kendall_tau(pred[ok], held[ok]):.3f}")
    print(f"τ(predictor, search FID)          {kendall_tau(pred[ok], objectives[pick][ok]):.3f}", flush=True)
    print("per NFE, τ(predictor, held-out FID) / τ(search FID, held-out FID):")
    nfes = np.asarray([schedules[i].nfe for i in pick])
    for nfe in sorted(set(nfes.tolist())):
        sub = ok & (nfes == nfe)
        print(f"  NFE {nfe} ({int(sub.sum())} trials): {kendall_tau(pred[sub], held[sub]):.3f} / "
              f"{kendall_tau(objectives[pick][sub], held[sub]):.3f}", flush=True)


def section_size(env: Env, schedules, objectives) -> None:
    print("\n## held-out τ by training-set size (a fixed fifth held out)")
    rng = np.random.default_rng(2)
    order = rng.permutation(len(schedules))
    test, pool = order[: len(order) // 5], order[len(order) // 5:]
    print(f"{'trials':>7}{'τ':>8}")
    for n in sorted({n for n in (25, 50, 100, 200, 400, 800) if n < len(pool)} | {len(pool)}):
        train = pool[:n]
        p = fit(env, [schedules[i] for i in train], objectives[train], PredictorConfig())
        tau = kendall_tau(p.predict([schedules[i] for i in test]), objectives[test])
        print(f"{n:>7}{tau:>8.3f}", flush=True)


def section_transfer(env: Env, schedules, objectives) -> None:
    print("\n## transfer NFE 5 → NFE 6 (τ on held-out NFE-6 trials)")
    nfes = np.asarray([s.nfe for s in schedules])
    five, six = np.flatnonzero(nfes == 5), np.flatnonzero(nfes == 6)
    rng = np.random.default_rng(3)
    six = rng.permutation(six)
    test, train = six[200:], six[:200]
    if len(test) < 30:
        print(f"too few NFE-6 trials ({len(six)}) for 200 + a test set")
        return
    cfg = PredictorConfig()

    def tau(p: Predictor) -> float:
        return kendall_tau(p.predict([schedules[i] for i in test]), objectives[test])

    base = fit(env, [schedules[i] for i in five], objectives[five], cfg)
    zero = tau(base)
    tuned = fit(env, [schedules[i] for i in train[:50]], objectives[train[:50]], cfg, predictor=base, epochs=100)
    zero_again = fit(env, [schedules[i] for i in five], objectives[five], cfg)  # the same NFE-5 predictor, afresh
    both = np.concatenate([five, train[:50]])  # fine-tuning that keeps rehearsing the NFE-5 trials
    rehearsed = fit(env, [schedules[i] for i in both], objectives[both], cfg, predictor=zero_again, epochs=100)
    scratch = fit(env, [schedules[i] for i in train], objectives[train], cfg)
    scratch50 = fit(env, [schedules[i] for i in train[:50]], objectives[train[:50]], cfg)
    print(f"{'predictor':<40}{'τ':>7}   (test: {len(test)} NFE-6 trials)")
    print(f"{'NFE 5 only (' + str(len(five)) + ' trials), zero-shot':<40}{zero:>7.3f}")
    print(f"{'NFE 5, fine-tuned on 50 NFE-6 alone':<40}{tau(tuned):>7.3f}")
    print(f"{'NFE 5, fine-tuned on NFE 5 + 50 NFE-6':<40}{tau(rehearsed):>7.3f}")
    print(f"{'from scratch on 50 NFE-6':<40}{tau(scratch50):>7.3f}")
    print(f"{'from scratch on 200 NFE-6':<40}{tau(scratch):>7.3f}", flush=True)


def section_speed(env: Env, schedules, objectives, space: SearchSpace, kinds: list[str], repeats: int) -> None:
    """Seconds to rank 10,000 new candidates (fitted on 4/5 of the trials; a new set each time), against the
    issue's one-second target: candidates bred as a search breeds them (mutations of 100 parents, so that many
    steps recur) and fresh random ones (almost every step new); beside it, what breeding them costs."""
    print(f"\n## ranking speed (10,000 new candidates per set, {repeats} sets, one thread)")
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    parents = [space.random(rng) for _ in range(100)]
    genomes = [space.mutate(parents[k % 100], rng) for k in range(10_000 * repeats)]
    sources = {"bred": [[space.decode(g) for g in genomes[k * 10_000: (k + 1) * 10_000]] for k in range(repeats)]}
    print(f"breeding and decoding 10,000 candidates (mutations of 100 parents): "
          f"{(time.perf_counter() - start) / repeats:.2f} s")
    sources["random"] = [[space.decode(space.random(rng)) for _ in range(10_000)] for _ in range(repeats)]
    print(f"{'kind':<28}{'candidates':>11}{'min s':>8}{'median s':>10}{'encode share':>14}{'median / 1 s':>14}")
    n = int(len(schedules) * 0.8)
    for name in kinds:
        kind, size, *flags = f"{name}:".split(":")
        cfg = PredictorConfig(kind=kind, ensemble=int(size or PredictorConfig.ensemble), probe="noprobe" not in flags)
        p = fit(env, schedules[:n], objectives[:n], cfg, spectrum="nospectrum" not in flags)
        for source, sets in sources.items():
            total, encoding = [], []
            for candidates in sets:
                start = time.perf_counter()
                p.predict(candidates)
                total.append(time.perf_counter() - start)
                start = time.perf_counter()
                encode(candidates, env.ns, None, cfg.probe, p.spectrum)
                encoding.append(time.perf_counter() - start)
            median = float(np.median(total))
            print(f"{name:<28}{source:>11}{min(total):>8.3f}{median:>10.3f}{np.median(encoding) / median:>14.0%}"
                  f"{median:>14.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="database with the digits-data searches (run here when missing)")
    parser.add_argument("--ceiling", type=int, default=150, help="trials re-measured on held-out noise (0: skip)")
    parser.add_argument("--ceiling-samples", type=int, default=1000,
                        help="draws of the held-out noise per re-measured trial (FID's noise shrinks with more)")
    parser.add_argument("--kinds", default="pool,pool:5:nospectrum,pool:1,pool:1:nospectrum,pool:1:noprobe:nospectrum,lstm",
                        help="networks of the kinds section (kind[:ensemble][:noprobe][:nospectrum])")
    parser.add_argument("--sections", default="kinds,nfe,ceiling,size,transfer,speed")
    parser.add_argument("--speed-kinds", default="pool:1:nospectrum,pool:1,pool",
                        help="networks of the speed section (as --kinds)")
    parser.add_argument("--speed-sets", type=int, default=5, help="sets of 10,000 candidates the speed section ranks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.data or f"sqlite:///{Path(tmp) / 'data.db'}"
        ensure_data(url)
        schedules, objectives = load(url)
        model = load_model("builtin:digits")
        ns = model.noise_schedule
        space = SearchSpace(parse_config(data_config("digits-data")).space_spec(), ns,
                            has_data_mean=model.data_mean is not None)
        print(f"{len(schedules)} measured digits schedules (FID, 250 samples of the search noise), "
              f"NFE {sorted({s.nfe for s in schedules})}")
        start = time.perf_counter()
        env = Env(ns, model_spectrum(model, seed=0))
        print(f"the model's spectrum ({len(env.spectrum.lam)} points, 4 draws): measured in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        sections = args.sections.split(",")
        done = section_kinds(env, schedules, objectives, space, args.kinds.split(",")) if "kinds" in sections else {}
        if "nfe" in sections:
            section_per_nfe(env, schedules, objectives, done)
        if "ceiling" in sections and args.ceiling > 0:
            section_ceiling(env, schedules, objectives, args.ceiling, args.ceiling_samples)
        if "size" in sections:
            section_size(env, schedules, objectives)
        if "transfer" in sections:
            section_transfer(env, schedules, objectives)
        if "speed" in sections:
            section_speed(env, schedules, objectives, space, args.speed_kinds.split(","), args.speed_sets)


if __name__ == "__main__":
    main()
