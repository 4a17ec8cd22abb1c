"""`muscle serve` and `muscle apikey create`, registered on the engine CLI's subparsers.

Also runnable alone: `python -m core.jobs.cli serve` / `python -m core.jobs.cli apikey create --name X`.
"""

from __future__ import annotations

import argparse
import sys


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from core.jobs.auth import create_api_key
    from core.jobs.db import session_scope
    from core.jobs.migrate import upgrade
    from core.jobs.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)  # a fresh embedded install has no schema yet
    with session_scope(settings.database_url) as db:
        row, key = create_api_key(db, args.name)
    print(f"created API key {row.id} ({row.name!r}); it is shown only now, store it safely:",
          file=sys.stderr)
    print(key, flush=True)  # the last line of output: scripts take it with `| tail -n1`
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from core.jobs.serve import serve

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

    from core.jobs.client_cli import add_jobs_commands

    add_jobs_commands(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="muscle")
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
