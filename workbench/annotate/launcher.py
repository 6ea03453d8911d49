"""Start argilla-server: run by the argilla-server venv's python, never imported by workbench.

Reads one JSON object on stdin (so secrets never appear in the process list or on disk):
`{"host", "port", "home", "workspace", "users": [{"username", "role", "password", "api_key"}]}`.
It points the server at SQLite under `home`, registers the SQL search engine, replaces Redis with an
in-process fakeredis (the server pings Redis at start-up and enqueues rq jobs that this embedded server
does not need to run), runs the database migrations and creates the users by calling argilla_server's
functions directly (its typer CLI breaks with click >= 8.2), then serves with uvicorn until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path


def _configure_environment(config: dict) -> None:
    home = Path(config["home"])
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        ARGILLA_HOME_PATH=str(home),
        ARGILLA_DATABASE_URL=f"sqlite+aiosqlite:///{home / 'argilla.db'}",
        ARGILLA_SEARCH_ENGINE="sql",
        HF_HUB_DISABLE_TELEMETRY="1",
        ARGILLA_REDIS_URL="redis://fakeredis.invalid:6379/0",
    )


def _use_fakeredis() -> None:
    import fakeredis
    import redis

    server = fakeredis.FakeServer()
    redis.from_url = lambda url, **kwargs: fakeredis.FakeRedis(server=server)


def _migrate() -> None:
    import alembic.command
    from alembic.config import Config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.command.upgrade(Config(ALEMBIC_CONFIG_FILE), "head")


async def _create_users(workspace_name: str, users: list[dict]) -> None:
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole, Workspace, WorkspaceUser

    async with AsyncSessionLocal() as db:
        workspace = await Workspace.get_by(db, name=workspace_name)
        if workspace is None:
            workspace = await Workspace.create(db, name=workspace_name)
        for spec in users:
            user = await accounts.get_user_by_username(db, spec["username"])
            if user is None:
                user = await User.create(
                    db,
                    first_name=spec["username"],
                    username=spec["username"],
                    role=UserRole(spec["role"]),
                    password_hash=accounts.hash_password(spec["password"]),
                    api_key=spec["api_key"],
                )
                # Generated secrets are printed this once (to the terminal of `workbench annotate serve`).
                secrets = f": password {spec['password']} api key {spec['api_key']}" if spec.get("generated") else ""
                print(f"created {spec['role']} {spec['username']!r}{secrets}", flush=True)
            else:
                print(f"kept existing user {spec['username']!r} (its password and API key are unchanged)", flush=True)
            if await WorkspaceUser.get_by(db, workspace_id=workspace.id, user_id=user.id) is None:
                await WorkspaceUser.create(db, workspace_id=workspace.id, user_id=user.id)


def main() -> None:
    config = json.loads(sys.stdin.read())
    _configure_environment(config)
    _use_fakeredis()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sql_search_engine  # noqa: F401  (registers the "sql" engine)
    import uvicorn
    from argilla_server._app import create_server_app

    _migrate()
    asyncio.run(_create_users(config["workspace"], config["users"]))
    print(f"argilla-server listening on http://{config['host']}:{config['port']}", flush=True)
    uvicorn.run(create_server_app(), host=config["host"], port=int(config["port"]), log_level="warning")


if __name__ == "__main__":
    main()
