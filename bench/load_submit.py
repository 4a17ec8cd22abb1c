"""A burst of job submissions: N JSON POST /jobs at once, naming files already uploaded (POST /files).

Prints and appends to bench/results/load.jsonl: how many were accepted (201), refused (4xx) or failed
(5xx / transport), and p50 / p99 / max latency in milliseconds.

    .venv/bin/python bench/load_submit.py --url http://127.0.0.1:8000 --key KEY --train T.tsv --aux A.tsv \\
        --jobs 100 --set model=minilm --label "sqlite burst"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "load.jsonl"


async def run(args: argparse.Namespace) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {args.key}"}
    settings = {k: json.loads(v) if v[:1] in "[{0123456789" else v for k, v in (s.split("=", 1) for s in args.set)}
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=300,
                                 limits=httpx.Limits(max_connections=args.jobs)) as client:
        ids = {}
        for role, path in (("train", args.train), ("aux", args.aux)):
            r = await client.post("/files", files={"file": (Path(path).name, Path(path).read_bytes())},
                                  data={"purpose": role})
            r.raise_for_status()
            ids[role] = r.json()["id"]
        body = {"training_file": ids["train"], "aux_file": ids["aux"], **settings}

        async def one() -> tuple[str, float]:
            start = time.perf_counter()
            try:
                r = await client.post("/jobs", json=body)
                outcome = "accepted" if r.status_code == 201 else "refused" if r.status_code < 500 else "failed"
            except httpx.HTTPError:
                outcome = "failed"
            return outcome, time.perf_counter() - start

        results = await asyncio.gather(*(one() for _ in range(args.jobs)))
    ms = sorted(1000 * t for _, t in results)
    count = {k: sum(1 for o, _ in results if o == k) for k in ("accepted", "refused", "failed")}
    return {"label": args.label, "burst": args.jobs, **count, "p50_ms": round(ms[len(ms) // 2], 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1), "max_ms": round(ms[-1], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--aux", required=True)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--label", default="")
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result))
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
