"""Schema migrations (Alembic) of the trial store.

The version table is ``schedsearch_alembic_version``: ``alembic_version`` belongs to
Optuna when its tables share the database, and autogenerate only looks at ``ss_`` tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect

VERSION_TABLE = "schedsearch_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Autogenerate sees only this project's tables (and their indexes/constraints)."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = name if type_ == "table" else getattr(table, "name", "")
    return bool(table_name) and str(table_name).startswith("ss_")


def config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(config(None)).walk_revisions()}  # type: ignore[arg-type]


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    if VERSION_TABLE not in inspect(connection).get_table_names():
        return None
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(config(connection), revision)
