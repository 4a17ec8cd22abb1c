"""Pollers against GET /jobs/{id}: how long a poll waits when many clients watch their jobs.

Each poller is one keep-alive HTTP connection that asks for the job, waits `--interval` seconds after
each answer, and asks again, for `--seconds`; `--interval 0` polls back to back (a closed loop: latency
then measures the server's throughput, not a client's experience). Prints and appends to
bench/results/load.jsonl: requests, errors (non-200 or transport), p50 / p99 / max in milliseconds, and
the server's own view from its /metrics histogram (requests, share answered within 50 ms, the buckets
holding its p50 and p99): a client-side figure far above the server's is the load generator's queueing.
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
from urllib.parse import urlsplit

import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "load.jsonl"


async def poller(client: httpx.AsyncClient, path: str, until: float, interval: float, lat: list[float],
                 errors: list[str], delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
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


class RawPoller:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to poll: a fixed request,
    the status line, Content-Length and the body. It costs the machine far less than an httpx request,
    so on a small shared machine the figures measure the server, not the load generator."""

    def __init__(self, url: str, path: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(self.request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:"))
            await self.reader.readexactly(length)
            return int(lines[0].split()[1])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def raw_poller(url: str, key: str, path: str, until: float, interval: float, lat: list[float],
                     errors: list[str], delay: float = 0.0) -> None:
    conn = RawPoller(url, path, key)
    await asyncio.sleep(delay)
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            status = await asyncio.wait_for(conn.get(), timeout=60)
            if status != 200:
                errors.append(str(status))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
            errors.append(type(exc).__name__)
        lat.append(time.perf_counter() - start)
        if interval:
            await asyncio.sleep(interval)
    conn.close()


def server_histogram(url: str, route: str) -> dict[float, float]:
    """The API's own request-duration histogram for one route (its /metrics, cumulative buckets)."""
    out: dict[float, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("muscle_http_request_seconds_bucket{") and f'route="{route}"' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def server_view(before: dict[float, float], after: dict[float, float]) -> dict[str, object]:
    """What the server measured meanwhile: its requests, the share answered within 50 ms, and the
    histogram bucket that holds its p50 and p99 (upper bounds in ms)."""
    counts = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if not total:
        return {}

    def bucket(q: float) -> float | None:
        bound = next(b for b, n in counts.items() if n >= q * total)
        return None if bound == float("inf") else round(1000 * bound, 1)

    return {"server_requests": int(total), "server_within_50ms": round(counts.get(0.05, 0.0) / total, 4),
            "server_p50_bucket_ms": bucket(0.5), "server_p99_bucket_ms": bucket(0.99)}


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
    before = server_histogram(args.url, "/jobs/{job_id}")
    async with httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"},
                                 limits=limits, timeout=60) as client:
        until = time.monotonic() + args.seconds
        streams = [stream(client, f"/jobs/{args.job}/events", until, opened, broken) for _ in range(args.streams)]
        path = f"/jobs/{args.job}"
        # --stagger: poller i starts i/N of an interval late, as independent clients would, instead of all
        # asking in the same millisecond every interval
        delays = [i * args.interval / args.pollers if args.stagger else 0.0 for i in range(args.pollers)]
        pollers = [raw_poller(args.url, args.key, path, until, args.interval, lat, errors, d) if args.client == "raw"
                   else poller(client, path, until, args.interval, lat, errors, d) for d in delays]
        await asyncio.gather(*streams, *pollers)
    server = server_view(before, server_histogram(args.url, "/jobs/{job_id}")) if args.pollers else {}
    ms = sorted(1000 * x for x in lat) or [float("nan")]

    def q(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 1)

    return {"label": args.label, "pollers": args.pollers, "interval_s": args.interval, "seconds": args.seconds,
            "requests": len(lat), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(ms[-1], 1),
            "mean_ms": round(statistics.fmean(ms), 1),
            **({"streams": args.streams, "streams_opened": len(opened), "streams_broken": broken}
               if args.streams else {}), "client": args.client, "stagger": args.stagger, **server}


SERVER_STACK = ("fastapi", "starlette", "uvicorn", "anyio", "sqlalchemy", "psycopg", "pydantic")


def environment() -> dict[str, object]:
    """What a figure depends on besides the code: the server stack's versions (read from this
    environment, which `muscle serve` shares here), the Python and the machine's speed."""
    import platform
    import timeit
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"versions": {n: ver(n) for n in SERVER_STACK}, "python": platform.python_version(),
            # best of 5 of a fixed pure-Python loop, to tell a slower machine from a slower change
            "sum_range_1e6_ms": round(1000 * min(timeit.repeat("sum(range(10**6))", number=1, repeat=5)), 1)}


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
    p.add_argument("--client", choices=("httpx", "raw"), default="httpx", help="pollers' HTTP client: httpx, or "
                   "a minimal keep-alive HTTP/1.1 loop that leaves the CPU to the server (streams always use httpx)")
    p.add_argument("--stagger", action="store_true", help="spread the pollers' first requests over one interval "
                   "(default: all start together and stay in step)")
    p.add_argument("--label", default="")
    p.add_argument("--no-record", action="store_true", help=f"print only, do not append to {RESULTS.name}")
    args = p.parse_args(argv)
    machine = environment()  # before the pollers start (a training worker already running counts in it)
    result = {**asyncio.run(run(args)), **machine}
    print(json.dumps(result))
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
