"""The package installs as one name, ``schedsearch``, with a lazy public API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import schedsearch

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, python: str = sys.executable, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_every_public_name_resolves():
    assert "load_model" in schedsearch.__all__ and "TrialStore" in schedsearch.__all__
    for name in schedsearch.__all__:
        assert getattr(schedsearch, name) is not None, name
    from schedsearch.solvers import Schedule

    assert schedsearch.Schedule is Schedule


def test_the_store_and_the_cli_do_not_import_torch(tmp_path):
    out = _python("import sys, schedsearch, schedsearch.storage, schedsearch.search.cli; "
                  "print('torch' in sys.modules)", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_old_top_level_names_are_not_installed(tmp_path):
    out = _python("import importlib.util as u; print([n for n in ('solvers', 'search', 'storage', 'predictors') "
                  "if u.find_spec(n)])", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_source_package_is_installed():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"schedsearch"}
    for top in ("solvers", "search", "storage", "predictors"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            if "_schedsearch" not in rel and "__pycache__" not in rel:
                found.add(".".join(("schedsearch", *rel)))
    assert found == listed


def test_wheel_holds_only_schedsearch_and_imports_in_a_clean_venv(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("schedsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert len(tops) == 2 and "schedsearch" in tops and (tops - {"schedsearch"}).pop().endswith(".dist-info"), tops
    for must in ("schedsearch/__init__.py", "schedsearch/search/cli/__init__.py",
                 "schedsearch/solvers/assets/digits/unet/diffusion_pytorch_model.safetensors",
                 "schedsearch/storage/migrations/env.py"):
        assert must in names, must
    assert not any("_schedsearch" in n for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    purelib = Path(_python("import sysconfig; print(sysconfig.get_paths()['purelib'])", python).stdout.strip())
    # the dependencies come from this environment's site-packages (not its .pth hooks, so not the editable finder)
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q",
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    ok = _python("import schedsearch, schedsearch.search, schedsearch.search.cli; "
                 "m = schedsearch.load_model('builtin:digits'); print(schedsearch.__file__, m.sample_shape)",
                 python, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert str(purelib) in ok.stdout and "(1, 8, 8)" in ok.stdout
    for old in ("search", "solvers", "storage", "predictors"):
        gone = _python(f"import {old}", python, cwd=tmp_path)
        assert gone.returncode != 0 and "No module named" in gone.stderr, old
