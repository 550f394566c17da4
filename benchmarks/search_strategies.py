"""Strategies side by side at equal evaluation budgets, several seeds each.

Every run is the same search (model, NFE, free decisions, baselines evaluated first, one
fidelity so that the budget is exactly the number of evaluations) with another strategy or
seed. Per run: the best objective on the search noise, the held-out objective of the best
searched schedule (its top 3 validated on another seed), and the number of evaluations
(baselines included) until the best-so-far came within 1.1× of that run's final best (for
a lower-is-better objective; the gap to it for the others). Per strategy: mean ± standard
deviation over seeds; the ratio compares with random search. "evals to 1.1× evolution": the
evaluations each strategy needs until its best-so-far is within 1.1× of steady-state evolution's
mean final best (S³'s claim for predictor-guided search: within a third of evolution's budget).
``--plot`` draws the best-so-far curves (mean over seeds).

    .venv/bin/python benchmarks/search_strategies.py                          # gmm-8d NFE 4
    .venv/bin/python benchmarks/search_strategies.py --model digits --nfe 5 --budget 120 --samples 500
    .venv/bin/python benchmarks/search_strategies.py --strategies evolution,guided --budget 300 --plot curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.search.metrics.quality import LOWER_IS_BETTER
from schedsearch.search.results import summarize
from schedsearch.storage import Stage, TrialStore

STRATEGIES = ("random", "evolution", "generational", "guided", "tpe", "cmaes")


def run(strategy: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    config = parse_config({
        "name": f"{strategy}-{seed}", "model": f"builtin:{args.model}", "nfe": args.nfe, "budget": args.budget,
        "seed": seed, "strategy": {"name": strategy, "batch_size": 4, "options": args.options.get(strategy, {})},
        "baselines": {"solvers": ["dpmpp_2m", "dpmpp_3m", "unipc_bh1", "unipc_bh2", "ipndm", "unip_bh1"],
                      "grids": ["uniform_lambda", "quadratic", "karras", "uniform_t"]},
        "fidelity": {"samples": [args.samples]},
        "validation": {"top_k": 3, "baselines": 2, "samples": args.holdout, "seed": 1},
    })
    store = TrialStore.open(f"sqlite:///{workdir / 'strategies.db'}")
    start = time.time()
    outcome = SearchRun(config, store, LocalEngine(config.evaluation_spec())).run()
    store.close()
    lower = outcome.objective in LOWER_IS_BETTER
    sign = 1.0 if lower else -1.0
    curve, best = [], float("inf")
    for t in outcome.trials:
        if t.stage in (Stage.BASELINE, Stage.SEARCH) and not t.meta.get("validation"):
            if t.objective is not None:
                best = min(best, sign * t.objective)
            curve.append(best)
    final = curve[-1]
    target = final * 1.1 if final > 0 else final * 0.9  # within 10 % of the final best
    reach = next(i + 1 for i, v in enumerate(curve) if v <= target)
    s = summarize(outcome.trials, outcome.objective, outcome.floor)[args.nfe]
    searched = [f for f in s.searched if f.holdout is not None]
    held = min((sign * f.holdout for f in searched), default=float("nan"))  # type: ignore[operator]
    base = s.best_baseline
    return {"strategy": strategy, "seed": seed, "objective": outcome.objective, "evaluations": len(curve),
            "search_best": sign * final, "holdout_best": sign * held,
            "baseline_holdout": base.holdout if base else None, "reach_1.1": reach, "minutes": (time.time() - start) / 60,
            "curve": [sign * v for v in curve]}


def evals_to(curve: list[float], target: float, lower: bool) -> int | None:
    """Evaluations until the best-so-far is at least as good as ``target`` (None: never)."""
    return next((i + 1 for i, v in enumerate(curve) if (v <= target if lower else v >= target)), None)


def plot(path: str, by: dict[str, list[dict]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, rs in by.items():
        n = min(len(r["curve"]) for r in rs)
        curves = np.array([r["curve"][:n] for r in rs])
        x = np.arange(1, n + 1)
        ax.plot(x, curves.mean(0), label=name)
        ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.15)
    ax.set_xlabel("true evaluations (baselines included)")
    ax.set_ylabel("best so far (search noise)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gmm-8d")
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--holdout", type=int, default=8000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--options", action="append", default=[], metavar="STRATEGY=JSON",
                        help='strategy options, e.g. guided={"initial": 16}')
    parser.add_argument("--plot", help="best-so-far curves PNG")
    parser.add_argument("--json", help="append every run as a JSON line here")
    args = parser.parse_args()
    args.options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.options)}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            for seed in range(args.seeds):
                r = run(strategy, seed, args, Path(tmp))
                runs.append(r)
                print(f"  {strategy:<13} seed {seed}: search {r['search_best']:.5g}  held-out {r['holdout_best']:.5g}"
                      f"  1.1× after {r['reach_1.1']} evals  ({r['minutes']:.1f} min)", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4g} ± {sd:.2g}"

    objective = runs[0]["objective"]
    baseline = runs[0]["baseline_holdout"]
    print(f"\n{args.model} NFE {args.nfe}, objective {objective}, {args.budget} evaluations at {args.samples} samples, "
          f"{args.seeds} seeds; held out: {args.holdout} samples of another seed; best baseline held out {baseline:.5g}")
    by = {s: [r for r in runs if r["strategy"] == s] for s in dict.fromkeys(r["strategy"] for r in runs)}
    lower = objective in LOWER_IS_BETTER
    evo = statistics.mean(r["search_best"] for r in by["evolution"]) if "evolution" in by else None
    target = None if evo is None else (evo * 1.1 if lower else evo / 1.1)
    print(f"{'strategy':<13}{'search best':>20}{'held-out best':>20}{'÷ random':>10}{'evals to 1.1×':>18}"
          f"{'evals to 1.1× evolution':>26}")
    ref = statistics.mean(r["holdout_best"] for r in by.get("random", runs))
    for s, rs in by.items():
        held = [r["holdout_best"] for r in rs]
        to_evo = "-"
        if target is not None:
            hits = [evals_to(r["curve"], target, lower) for r in rs]
            done = [h for h in hits if h is not None]
            to_evo = (ms(done) if done else "never") + f" ({len(done)}/{len(rs)})"
        print(f"{s:<13}{ms([r['search_best'] for r in rs]):>20}{ms(held):>20}{statistics.mean(held) / ref:>10.3f}"
              f"{ms([r['reach_1.1'] for r in rs]):>18}{to_evo:>26}")
    if target is not None:
        print(f"(1.1× evolution's mean final best = {target:.5g}; a third of its budget = {args.budget / 3:.0f} evaluations)")
    if args.plot:
        plot(args.plot, by, f"{args.model} NFE {args.nfe}: best so far, mean over {args.seeds} seeds (band: min-max)")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
