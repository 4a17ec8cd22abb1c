"""`muscle jobs ...`: the job service from the command line, over HTTP (core.service.client)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.argtypes import key_text, key_value, name_path
from core.service.client import ClientError, JobsClient


def _settings_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ClientError(f"{path}: settings must be a mapping of setting names to values")
    return data


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _client(args: argparse.Namespace) -> JobsClient:
    return JobsClient(url=args.url, api_key=args.api_key)


def cmd_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = _settings_file(args.config) if args.config else {}
    body.update(dict(args.set))
    with _client(args) as client:
        def up(path: Path, purpose: str) -> str:
            f = client.upload(path, purpose, args.text_column, args.label_column)
            print(f"uploaded {path.name} as {f['id']} ({f['rows']} rows, {purpose})", file=sys.stderr)
            return str(f["id"])

        body["training_file"] = up(args.train, "train")
        body["aux_file"] = up(args.aux, "aux")
        if args.eval:
            body["eval_file"] = up(args.eval, "eval")
        if args.probe_file:
            body["probe_files"] = {name: up(path, "probe") for name, path in args.probe_file}
        if args.probe:
            body["probes"] = args.probe
        if args.metadata:
            body["metadata"] = dict(args.metadata)
        if args.text_column != "text":
            body["text_column"] = args.text_column
        if args.label_column != "label":
            body["label_column"] = args.label_column
        job = client.create_job(body, idempotency_key=args.idempotency_key or str(uuid.uuid4()))
        print(f"created {job['id']} ({job['status']})", file=sys.stderr)
        if not args.follow:
            print(job["id"])
            return 0
        return _follow(client, job["id"])


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.jobs(status=args.status, limit=args.limit)
    print(f"{'id':<32} {'status':<11} {'created (UTC)':<19} {'method':<8} {'CACC':>6}  ASR")
    for job in jobs:
        metrics = job.get("metrics") or {}
        cacc = f"{100 * metrics['cacc']:.1f}" if metrics.get("cacc") is not None else "-"
        asr = " ".join(f"{k}={100 * v:.1f}" for k, v in (metrics.get("asr") or {}).items()) or "-"
        print(f"{job['id']:<32} {job['status']:<11} {_when(job['created_at']):<19} {job['method']:<8} "
              f"{cacc:>6}  {asr}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.job(args.job_id))
    return 0


def _follow(client: JobsClient, job_id: str) -> int:
    """Print events as they come, with a progress bar over training steps; exit 0 when the job succeeds."""
    from tqdm import tqdm

    bar: Any = None
    try:
        for event in client.events(job_id, follow=True):
            data = event.get("data") or {}
            if event["type"] == "metrics" and data.get("total_steps"):
                if bar is None:
                    bar = tqdm(total=data["total_steps"], unit="step", file=sys.stderr, dynamic_ncols=True)
                bar.n = data["step"]
                bar.set_postfix(epoch=data.get("epoch"), loss=f"{data['loss']:.4g}" if data.get("loss") else None,
                                refresh=False)
                bar.refresh()
                continue
            line = f"{_when(event['created_at'])} {event['type']}: {event['message']}"
            (bar.write if bar is not None else print)(line, file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    job = client.job(job_id)
    print(f"{job_id} {job['status']}" + (f": {job['error']['message']}" if job.get("error") else ""),
          file=sys.stderr)
    return 0 if job["status"] == "succeeded" else 1


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.follow:
            return _follow(client, args.job_id)
        for event in client.events(args.job_id):
            print(f"{_when(event['created_at'])} {event['level']:<5} {event['type']}: {event['message']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(args.job_id)
    print(f"{job['id']} {job['status']}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    wanted = {name: getattr(args, name) for name in ("model", "adapter", "report", "screen")
              if getattr(args, name)}
    if not wanted:
        raise ClientError("say what to download: --model DIR, --adapter DIR, --report DIR or --screen DIR")
    with _client(args) as client:
        for name, dest in wanted.items():
            client.download(args.job_id, name, dest)
            print(f"{name}: {dest} (checksum verified)", file=sys.stderr)
    return 0


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The service's error, said once on stderr (exit 1), not as a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return run


def _command(sub: argparse._SubParsersAction, name: str, help: str,  # type: ignore[type-arg]
             func: Callable[[argparse.Namespace], int], job_id: bool = False) -> argparse.ArgumentParser:
    """One `muscle jobs` subcommand: the service's address and key, the job's id where it takes one, and
    errors from the service said once (`_guard`)."""
    p = sub.add_parser(name, help=help)
    if job_id:
        p.add_argument("job_id", help="the job's id")
    p.add_argument("--url", default=None, help="the service (default: MUSCLE_URL, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="API key (default: MUSCLE_API_KEY)")
    p.set_defaults(func=_guard(func))
    return p


def add_jobs_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    j = subparsers.add_parser("jobs", help="create and follow jobs on a running service (over HTTP)")
    sub = j.add_subparsers(dest="jobs_command", required=True)

    c = _command(sub, "create", "upload the files and create a job; prints its id", cmd_create)
    c.add_argument("--train", type=Path, required=True, help="untrusted training file (CSV, TSV or JSONL)")
    c.add_argument("--aux", type=Path, required=True, help="small trusted clean file (the same labels)")
    c.add_argument("--eval", type=Path, help="clean test file for CACC")
    c.add_argument("--probe-file", action="append", default=[], type=name_path, metavar="NAME=PATH",
                   help="a triggered test file for ASR, repeatable")
    c.add_argument("--probe", action="append", default=[], metavar="TRIGGER",
                   help="a built-in probe: badnets, addsent or 'insert:\"text\"', repeatable")
    c.add_argument("--config", help="settings as a YAML or JSON file (any field of `muscle settings`)")
    c.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="one setting, e.g. --set epochs=3 --set method=vanilla (after --config)")
    c.add_argument("--metadata", action="append", default=[], type=key_text, metavar="KEY=VALUE",
                   help="a string pair kept with the job, repeatable")
    c.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    c.add_argument("--label-column", default="label", help="column holding the label (default: label)")
    c.add_argument("--idempotency-key", help="retrying with the same key never makes a second job "
                                             "(default: a fresh one)")
    c.add_argument("--follow", action="store_true", help="then follow its events until it ends")

    ls = _command(sub, "list", "your jobs, newest first", cmd_list)
    ls.add_argument("--status", action="append", help="only this status, repeatable")
    ls.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    _command(sub, "get", "one job as JSON", cmd_get, job_id=True)
    e = _command(sub, "events", "a job's events; --follow streams them with a progress bar", cmd_events,
                 job_id=True)
    e.add_argument("--follow", action="store_true", help="stream until the job ends; exit 0 if it succeeded")
    _command(sub, "cancel", "cancel a job", cmd_cancel, job_id=True)

    d = _command(sub, "download", "download artifacts, checksum verified, archives unpacked", cmd_download,
                 job_id=True)
    d.add_argument("--model", metavar="DIR", help="the merged model (loads with transformers)")
    d.add_argument("--adapter", metavar="DIR", help="the adapter (low-rank methods)")
    d.add_argument("--report", metavar="DIR", help="metrics.json")
    d.add_argument("--screen", metavar="DIR", help="the rows the screen removed (TSV)")
