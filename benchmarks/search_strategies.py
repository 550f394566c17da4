"""Strategies side by side at equal evaluation budgets, several seeds each.

Every run is the same search (model, NFE, free decisions, baselines evaluated first, one
fidelity so that the budget is exactly the number of evaluations) with another strategy or
seed. Per run: the best objective on the search noise, the held-out objective of the best
searched schedule (its top 3 validated on another seed), and the number of evaluations
(baselines included) until the best-so-far came within 1.1× of that run's final best (for
a lower-is-better objective; the gap to it for the others). Per strategy: mean ± standard
deviation over seeds; the ratio compares with random search.

    .venv/bin/python benchmarks/search_strategies.py                          # gmm-8d NFE 4
    .venv/bin/python benchmarks/search_strategies.py --model digits --nfe 5 --budget 120 --samples 500
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

STRATEGIES = ("random", "evolution", "generational", "tpe", "cmaes")


def run(strategy: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    config = parse_config({
        "name": f"{strategy}-{seed}", "model": f"builtin:{args.model}", "nfe": args.nfe, "budget": args.budget,
        "seed": seed, "strategy": {"name": strategy, "batch_size": 4},
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
            "baseline_holdout": base.holdout if base else None, "reach_1.1": reach, "minutes": (time.time() - start) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gmm-8d")
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--holdout", type=int, default=8000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", help="append every run as a JSON line here")
    args = parser.parse_args()
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
    print(f"{'strategy':<13}{'search best':>20}{'held-out best':>20}{'÷ random':>10}{'evals to 1.1×':>18}")
    by = {s: [r for r in runs if r["strategy"] == s] for s in dict.fromkeys(r["strategy"] for r in runs)}
    ref = statistics.mean(r["holdout_best"] for r in by.get("random", runs))
    for s, rs in by.items():
        held = [r["holdout_best"] for r in rs]
        print(f"{s:<13}{ms([r['search_best'] for r in rs]):>20}{ms(held):>20}{statistics.mean(held) / ref:>10.3f}"
              f"{ms([r['reach_1.1'] for r in rs]):>18}")


if __name__ == "__main__":
    main()
