"""Pollers against GET /jobs/{id}: how long a poll waits when many clients watch their jobs.

Each poller is one keep-alive HTTP connection that asks for the job, waits `--interval` seconds after
each answer, and asks again, for `--seconds`; `--interval 0` polls back to back (a closed loop: latency
then measures the server's throughput, not a client's experience). Prints and appends to
bench/results/load.jsonl: requests, errors (non-200 or transport), p50 / p99 / max in milliseconds.
`--streams N` holds N server-sent-event streams of the job open meanwhile and says how many broke.

    .venv/bin/python bench/load_poll.py --url http://127.0.0.1:8000 --key KEY --job JOB_ID \\
        --pollers 200 --interval 1 --seconds 60 --label sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "load.jsonl"


async def poller(client: httpx.AsyncClient, path: str, until: float, interval: float, lat: list[float],
                 errors: list[str]) -> None:
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            r = await client.get(path)
            if r.status_code != 200:
                errors.append(str(r.status_code))
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        lat.append(time.perf_counter() - start)
        if interval:
            await asyncio.sleep(interval)


async def stream(client: httpx.AsyncClient, path: str, until: float, opened: list[int], broken: list[str]) -> None:
    """One server-sent-event stream held open until `until` (it must not end or fail before)."""
    try:
        async with client.stream("GET", path, params={"stream": "true"}) as r:
            if r.status_code != 200:
                broken.append(str(r.status_code))
                return
            opened.append(1)
            lines = r.aiter_lines()
            while time.monotonic() < until:
                try:
                    await asyncio.wait_for(lines.__anext__(), timeout=max(until - time.monotonic(), 0.01))
                except asyncio.TimeoutError:
                    return
                except StopAsyncIteration:
                    broken.append("ended")
                    return
    except httpx.HTTPError as exc:
        broken.append(type(exc).__name__)


async def run(args: argparse.Namespace) -> dict[str, object]:
    lat: list[float] = []
    errors: list[str] = []
    opened: list[int] = []
    broken: list[str] = []
    size = args.pollers + args.streams
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"},
                                 limits=limits, timeout=60) as client:
        until = time.monotonic() + args.seconds
        streams = [stream(client, f"/jobs/{args.job}/events", until, opened, broken) for _ in range(args.streams)]
        await asyncio.gather(*streams, *(poller(client, f"/jobs/{args.job}", until, args.interval, lat, errors)
                                         for _ in range(args.pollers)))
    ms = sorted(1000 * x for x in lat)

    def q(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 1)

    return {"label": args.label, "pollers": args.pollers, "interval_s": args.interval, "seconds": args.seconds,
            "requests": len(ms), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(ms[-1], 1),
            "mean_ms": round(statistics.fmean(ms), 1),
            **({"streams": args.streams, "streams_opened": len(opened), "streams_broken": broken}
               if args.streams else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--pollers", type=int, default=20)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--streams", type=int, default=0, help="event streams held open meanwhile (the job must "
                   "not end during the run)")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
