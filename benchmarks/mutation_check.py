"""Mutation check: put known bugs back into a copy of the source and see that the tests catch them.

Each mutation edits one snippet of one file in a temporary copy of the package (the
repository's ``solvers/``, ``search/``, ``storage/`` and ``predictors/`` folders laid out as
``pkg/schedsearch/...``), and runs a chosen subset of the tests against that copy: the copy is
put first on ``PYTHONPATH``, where it wins over the editable install (whose import hook comes
last), for pytest and for every process the tests start (the ``schedsearch`` command line,
spawned workers). The pytest process checks that it imports ``schedsearch`` from the copy
before it runs anything. A control run of the unmutated copy comes first: every selected
test must pass there, or the table means nothing. The tests run with ``OMP_NUM_THREADS=1``
unless it is set: their tensors are small, and two OpenMP threads on a busy machine make
them up to a hundred times slower.

Not part of the test suite; run it before a release (PostgreSQL cases run when
``SCHEDSEARCH_TEST_POSTGRES_URL`` is set, see ``.ci/postgres``, and are skipped otherwise):

    .venv/bin/python benchmarks/mutation_check.py [--only NAME,NAME] [--no-control] [--keep-going] [--list] [-v]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("solvers", "search", "storage", "predictors")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # inside the package: solvers/models.py, ...
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation(
        "guidance: out_c + s·(out_c − out_u)", "solvers/models.py",
        "return out_u + guidance_scale * (out_c - out_u)",
        "return out_c + guidance_scale * (out_c - out_u)",
        ("tests/test_models.py::test_classifier_free_guidance_on_a_toy_network",
         "tests/test_oracle_diffusers.py::test_guided_sampling_matches_diffusers"),
    ),
    Mutation(
        "active_points ignored (most recent points)", "solvers/coefficients.py",
        "specs = [(tuple(s_index + p for p in d.active_points), d.relaxation) for d in derivatives]",
        "specs = [(tuple(s_index - m for m in range(1, len(d.active_points) + 1)), d.relaxation) "
        "for d in derivatives]",
        ("tests/test_plan.py",),
    ),
    Mutation(
        "FID extractor input x/255", "search/metrics/fidelity.py",
        "x = x.float() / 127.5 - 1.0",
        "x = x.float() / 255",
        ("tests/test_fidelity.py::test_registered_extractor_is_the_classifier",
         "tests/test_fidelity.py::test_fid_matches_an_independent_frechet_distance"),
    ),
    Mutation(
        "record_trials: insert and finish in two transactions", "storage/store.py",
        """            rows = self._insert(s, search, [r[0] for r in results], TrialState.RUNNING, worker)
            for row,""",
        """            rows = self._insert(s, search, [r[0] for r in results], TrialState.RUNNING, worker)
        with self._tx() as s:
            s.add_all(rows)
            for row,""",
        ("tests/test_store.py::test_record_trials_is_one_transaction",
         "tests/test_store.py::test_record_trials_fails_at_flush_and_leaves_nothing"),
    ),
    Mutation(
        "record_trials: one transaction per trial", "storage/store.py",
        """        with self._tx() as s:
            rows = self._insert(s, search, [r[0] for r in results], TrialState.RUNNING, worker)
            for row, (_, metrics, objective, error) in zip(rows, results):
                state = TrialState.FAILED if error else TrialState.COMPLETE
                _finish(s, row, state, metrics, objective, error, None)
            return [_trial(r) for r in rows]""",
        """        out = []
        for trial, metrics, objective, error in results:
            with self._tx() as s:
                [row] = self._insert(s, search, [trial], TrialState.RUNNING, worker)
                state = TrialState.FAILED if error else TrialState.COMPLETE
                _finish(s, row, state, metrics, objective, error, None)
                out.append(_trial(row))
        return out""",
        ("tests/test_store.py::test_record_trials_fails_at_flush_and_leaves_nothing",),
    ),
    Mutation(
        "newer schema: a committed write before refusing", "storage/store.py",
        """    elif revision not in migrate.known_revisions():
""",
        """    elif revision not in migrate.known_revisions():
        conn.execute(text("UPDATE ss_searches SET updated_at = CURRENT_TIMESTAMP"))
        conn.commit()
""",
        ("tests/test_migrations.py::test_newer_schema_is_refused_and_left_untouched",),
    ),
    Mutation(
        "evaluator: NaN/inf check removed", "search/evaluator.py",
        "bad = int((~torch.isfinite(samples.reshape(n, -1)).all(1)).sum())",
        "bad = 0",
        ("tests/test_evaluator.py::test_nan_samples_are_a_failed_result",),
    ),
    Mutation(
        "CLI sample: NaN/inf check removed", "search/cli/sampling.py",
        "if not torch.isfinite(x).all():",
        "if False:",
        ("tests/test_cli.py::test_sample_refuses_non_finite_results",),
    ),
    Mutation(
        "CLI sample: --guidance-scale ignored", "search/cli/sampling.py",
        "x = sample(model, schedule, noise, cond=labels, guidance_scale=args.guidance_scale)",
        "x = sample(model, schedule, noise, cond=labels)",
        ("tests/test_cli.py::test_sample_image_model_with_png_and_guidance",),
    ),
    Mutation(
        "φ argument sign (data prediction)", "solvers/coefficients.py",
        "scale, z = t.alpha, -h",
        "scale, z = t.alpha, h",
        ("tests/test_plan.py",),
    ),
    Mutation(
        "relaxation ignored", "solvers/coefficients.py",
        "coeff *= relaxation",
        "coeff *= 1.0",
        ("tests/test_plan.py",),
    ),
    Mutation(
        "UniC corrector weight 1 → 0.5", "solvers/coefficients.py",
        "specs.append((top, 1.0))",
        "specs.append((top, 0.5))",
        ("tests/test_plan.py::test_corrector_coefficients_for_chosen_points",
         "tests/test_oracle_diffusers.py::test_unipc_matches_diffusers[bh2-linear-epsilon]"),
    ),
    Mutation(
        "SQLite: BEGIN instead of BEGIN IMMEDIATE", "storage/store.py",
        'conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")',
        'conn.exec_driver_sql("BEGIN")',
        ("tests/test_store.py::test_two_processes_write_one_database[sqlite]",),
    ),
]

RUNNER = """
import sys
import schedsearch, schedsearch.search, schedsearch.solvers, schedsearch.storage
copy = sys.argv[1]
for module in (schedsearch, schedsearch.search, schedsearch.solvers, schedsearch.storage):
    if not module.__file__.startswith(copy):
        sys.exit(f"mutation_check: {module.__name__} comes from {module.__file__}, not from the copy in {copy}")
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def build_copy(where: Path) -> Path:
    """``where/schedsearch/``: the package as installed, copied from the repository."""
    pkg = where / "schedsearch"
    pkg.mkdir(parents=True)
    shutil.copy(ROOT / "search" / "_schedsearch" / "__init__.py", pkg / "__init__.py")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def apply(pkg: Path, mutation: Mutation) -> None:
    path = pkg / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.name!r}: the snippet occurs {count} times in {mutation.path} (need 1)")
    path.write_text(text.replace(mutation.old, mutation.new))


@dataclass(frozen=True)
class Outcome:
    returncode: int
    summary: str
    first_failure: str
    seconds: float
    output: str


def run_tests(mutation: Mutation | None, tests: tuple[str, ...], stop_first: bool) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="schedsearch-mutant-") as tmp:
        pkg = build_copy(Path(tmp))
        if mutation is not None:
            apply(pkg, mutation)
        env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))}
        args = ["-q", "-rfE", "-p", "no:cacheprovider", *(["-x"] if stop_first else []), *tests]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(pkg), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    failures = [line.split(" - ")[0].split(" ", 1)[1] for line in proc.stdout.splitlines()
                if line.startswith(("FAILED ", "ERROR "))]
    summary = next((m.group(1) for m in re.finditer(r"^=*\s*(\d+ (?:passed|failed|error|skipped).*?) in [\d.]+s",
                                                      proc.stdout, re.M)), "")
    summary = re.sub(r"\s*=+$", "", summary)
    return Outcome(proc.returncode, summary, failures[0] if failures else "", seconds, output)


def short(test: str) -> str:
    return test.removeprefix("tests/")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated substrings of mutation names to run")
    parser.add_argument("--no-control", action="store_true", help="skip the unmutated control run")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    parser.add_argument("--keep-going", action="store_true", help="run every selected test (default: stop at the "
                        "first failure); the table then counts them all")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's output of every run")
    args = parser.parse_args()
    mutations = MUTATIONS
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        mutations = [m for m in MUTATIONS if any(k in m.name for k in keys)]
    if args.list:
        for m in mutations:
            print(f"{m.name}\n    {m.path}: {m.old.strip().splitlines()[0]}\n    tests: {', '.join(m.tests)}")
        return 0
    start = time.perf_counter()
    rows, ok = [], True
    if not args.no_control:
        selected = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
        control = run_tests(None, selected, stop_first=False)
        if args.verbose:
            print(control.output)
        passed = control.returncode == 0
        ok &= passed
        rows.append(["(none: control run)", f"{len(selected)} selections: {control.summary}",
                     "no: all pass" if passed else f"FAILS (rc {control.returncode})", short(control.first_failure),
                     f"{control.seconds:.0f}"])
        print(f"control run: {control.summary} ({control.seconds:.0f} s)", flush=True)
    for m in mutations:
        out = run_tests(m, m.tests, stop_first=not args.keep_going)
        if args.verbose:
            print(out.output)
        if out.returncode == 1:
            caught = f"yes ({out.summary})"
        elif out.returncode == 0:
            caught = f"NO ({out.summary})"
            ok = False
        else:  # usage error, collection error, interrupted: the tests did not run as meant
            caught = f"? rc {out.returncode}: {out.output.strip().splitlines()[-1] if out.output.strip() else ''}"
            ok = False
        rows.append([m.name, ", ".join(short(t) for t in m.tests), caught, short(out.first_failure),
                     f"{out.seconds:.0f}"])
        print(f"{m.name}: {caught} ({out.seconds:.0f} s)", flush=True)
    print()
    print(table(rows, ["mutation", "tests run", "caught?", "first failing test", "s"]))
    print(f"\n{len(mutations)} mutations, total {time.perf_counter() - start:.0f} s"
          + ("" if ok else "; SOME MUTATIONS SURVIVED OR THE CONTROL FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
