"""`muscle serve` and `muscle apikey create`, registered on the engine CLI's subparsers.

Also runnable alone: `python -m core.service.cli serve` / `python -m core.service.cli apikey create --name X`.
"""

from __future__ import annotations

import argparse
import sys


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from core.service.auth import create_api_key
    from core.service.db import session_scope

    with session_scope(_database()) as db:
        row, key = create_api_key(db, args.name)
    print(f"created API key {row.id} ({row.name!r}); it is shown only now, store it safely:",
          file=sys.stderr)
    print(key, flush=True)  # the last line of output: scripts take it with `| tail -n1`
    return 0


def _database() -> str:
    """The database URL, its schema made first: a fresh embedded install has none yet."""
    from core.service.migrate import upgrade
    from core.service.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    return settings.database_url


def cmd_apikey_list(args: argparse.Namespace) -> int:
    from core.service.auth import list_keys
    from core.service.db import session_scope

    with session_scope(_database()) as db:
        rows = list_keys(db)
        print(f"{'id':<30} {'prefix':<9} {'created (UTC)':<20} {'revoked (UTC)':<20} name")
        for r in rows:
            revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
            print(f"{r.id:<30} {r.prefix:<9} {r.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {revoked:<20} "
                  f"{r.name}")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    from core.service.auth import revoke_key
    from core.service.db import session_scope

    with session_scope(_database()) as db:
        row = revoke_key(db, args.key_id)
        if row is None:
            print(f"error: no API key {args.key_id!r} (`muscle apikey list` shows them)", file=sys.stderr)
            return 1
        print(f"revoked {row.id} ({row.name!r}); its requests now answer 401", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from core.service.serve import serve

    return serve(host=args.host, port=args.port, with_worker=not args.no_worker,
                 with_api=not args.no_api)


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = subparsers.add_parser(
        "serve", help="run the job service: API, one worker and an embedded broker (SQLite, local "
        "files under MUSCLE_DATA_DIR unless MUSCLE_* settings say otherwise)")
    s.add_argument("--host", default=None, help="bind address (default MUSCLE_HOST, 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default MUSCLE_PORT, 8000)")
    s.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    s.add_argument("--no-api", action="store_true", help="worker only")
    s.set_defaults(func=cmd_serve)

    k = subparsers.add_parser("apikey", help="manage API keys")
    ksub = k.add_subparsers(dest="apikey_command", required=True)
    c = ksub.add_parser("create", help="create an API key; prints it as the last line")
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.set_defaults(func=cmd_apikey_create)
    ls = ksub.add_parser("list", help="every key: id, prefix, created, revoked, name (never the key)")
    ls.set_defaults(func=cmd_apikey_list)
    r = ksub.add_parser("revoke", help="revoke a key by id; its requests answer 401 from then on")
    r.add_argument("key_id", help="the key's id (key_...), as `muscle apikey list` shows it")
    r.set_defaults(func=cmd_apikey_revoke)

    from core.service.client_cli import add_jobs_commands

    add_jobs_commands(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="muscle")
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
