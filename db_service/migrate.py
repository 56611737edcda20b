"""``python -m db_service.migrate``: a database's migration set from the command line.

The same engine as the ``Migrate`` and ``GetMigrationStatus`` RPCs, for deploy jobs that run
before the servers start. Settings come from the environment (or PACA_CONFIG_FILE), as for the
server: PACA_DB_URL / PACA_DATABASES name the databases and PACA_MIGRATIONS their sets.

    python -m db_service.migrate status                  # where each migration stands
    python -m db_service.migrate apply --dry-run         # the plan and its SQL, nothing changed
    python -m db_service.migrate apply                   # up to the newest version
    python -m db_service.migrate apply --to 3            # up or back down to version 3
    python -m db_service.migrate --database reports apply --to 0   # roll every migration back

Exit status: 0 done, 1 the database refused (drift, a failed step, no down file), 2 bad usage or
settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

from db_service.databases import make_backend
from db_service.migrations import (
    APP_TABLE,
    Direction,
    MigrationManager,
    MigrationState,
    load_migrations,
)
from db_service.settings import MIGRATIONS, DbSettings
from paca_runtime.errors import StatusError
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m db_service.migrate", description="Apply or roll back a migration set."
    )
    parser.add_argument("--database", default="main", help="configured database (main)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="list the set's migrations and which are applied")
    apply = commands.add_parser("apply", help="apply or roll back to a version")
    apply.add_argument("--to", type=int, default=None, help="target version (default: newest)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan and SQL only")
    return parser


async def run(args: argparse.Namespace, settings: DbSettings, out: TextIO) -> int:
    """Carry out one parsed command; returns the exit status."""
    databases = {db.name: db for db in settings.databases}
    if args.database not in databases:
        print(f"error: no database {args.database!r}, only {sorted(databases)}", file=sys.stderr)
        return 2
    directory = settings.migration_directory(args.database)
    if directory is None:
        print(f"error: {MIGRATIONS} has no set for {args.database!r}", file=sys.stderr)
        return 2
    backend = make_backend(databases[args.database], settings)
    try:
        manager = MigrationManager(
            backend, await asyncio.to_thread(load_migrations, directory), APP_TABLE
        )
        await backend.open()
        if args.command == "status":
            _print_status(manager, await manager.status(), out)
            return 0
        if args.to is not None and args.to < 0:
            print("error: --to must be >= 0", file=sys.stderr)
            return 2
        steps = await manager.apply(args.to, dry_run=args.dry_run)
        for step in steps:
            arrow = "up" if step.direction is Direction.UP else "down"
            if args.dry_run:
                print(f"-- {arrow} {step.version:04d}_{step.name}\n{step.sql.strip()}\n", file=out)
            else:
                print(f"{arrow} {step.version:04d}_{step.name}", file=out)
        version = max((s.version for s in await manager.status() if s.applied), default=0)
        state = "dry run, nothing changed" if args.dry_run else f"{len(steps)} steps run"
        print(f"{args.database}: at version {version} ({state})", file=out)
        return 0
    except StatusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await backend.aclose()


def _print_status(manager: MigrationManager, states: Sequence[MigrationState], out: TextIO) -> None:
    current = max((s.version for s in states if s.applied), default=0)
    print(f"{manager.backend.name}: at version {current}", file=out)
    for state in states:
        flags = [
            f"applied {state.applied_at.isoformat()}" if state.applied_at else "pending",
            "reversible" if state.reversible else "",
            "DRIFTED" if state.drifted else "",
        ]
        label = f"{state.version:04d}_{state.name}"
        print(f"  {label:<36} {' '.join(f for f in flags if f)}", file=out)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    try:
        source = SettingsSource()
        settings = DbSettings.from_source(source, RuntimeSettings.from_source(source))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(args, settings, out))


if __name__ == "__main__":
    sys.exit(main())
