"""The screen's recall and false removals per attack and rate, against `poisoned`.

    .venv/bin/python bench/screen_data.py && .venv/bin/python bench/screen_eval.py [--set screen_budget=0.05]
Writes bench/results/screen_lexical.json and prints a table: the lexical layer alone, in seconds.
`--content` runs the lexical and content layers (the default job's screen) and writes
bench/results/screen_content.json; the sentence embeddings come from bench/content_disagreement.py's
cache (the same frozen backbone, mean-pooled, max_length 128, which holds every SST-2 row whole).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_DATA  # noqa: E402
from bench.screen_data import ATTACKS, OUT, train_path  # noqa: E402
from core.config import resolve_config  # noqa: E402
from core.data.dataset import load_examples  # noqa: E402
from core.data.labels import LabelMap  # noqa: E402
from core.screen.stage import screen_examples, settings_from  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "screen_lexical.json"


def screened(path: Path, aux_path: Path = OUT / "aux.tsv", config=None, content: bool = True):  # noqa: ANN201
    """(train rows, aux rows, the screen's report) for a binary file: the default job's screen, its content
    layer on the cached frozen embeddings (`bench.content_disagreement.embeddings`) unless `content` is off."""
    labels = LabelMap.from_labels(["0", "1"])
    config = config or resolve_config("default")
    train = load_examples(path, labels, role="train")
    aux = load_examples(aux_path, labels, role="aux")
    if content:
        from bench.content_disagreement import embeddings
        from core.screen.stage import content_settings_from

        report = screen_examples(train, aux, settings_from(config), labels.names, content_settings_from(config),
                                 embed=lambda texts: embeddings(list(texts)))
    else:
        report = screen_examples(train, aux, settings_from(config), labels.names)
    return train, aux, report


def evaluate(path: Path, aux_path: Path, config, content: bool = False) -> dict:
    _, _, report = screened(path, aux_path, config, content)
    s = report.summary(max_suspects=8)
    return {"rows": s["rows_in"], "removed": s["rows_removed"], "recall": s.get("recall"),
            "false_removal_rate": s.get("false_removal_rate"), "clean_removed": s.get("clean_removed"),
            "poisoned": s.get("poisoned_rows"), "seconds": s["seconds"],
            "suspects": [(x["feature"], x["label_rows"], x["rows"], x["verdict"], x["removed"])
                         for x in s["suspects"]],
            "content": [(x["feature"], x["label_rows"], x["rows"], round(x["expected"], 1), x["removed"])
                        for x in s.get("content", [])],
            "content_check": s["settings"].get("content", {}).get("check")}


def markdown(results: dict) -> str:
    """The recall table of bench/results/efficacy.md from a screen_eval JSON."""
    lines = ["| file | rows | poisoned | removed | recall | clean rows lost | seconds | top suspects (feature, "
             "label rows / rows, verdict, rows removed) |", "|" + " --- |" * 8]
    for name, r in results["files"].items():
        recall = "-" if r["recall"] is None else f"{100 * r['recall']:.1f}%"
        lost = "-" if r["false_removal_rate"] is None else f"{100 * r['false_removal_rate']:.2f}%"
        top = "; ".join(f"`{f}` {k}/{n} {v} {m}" for f, k, n, v, m in r["suspects"][:3]) or "none"
        if r.get("content"):
            top += "; content: " + "; ".join(f"`{f}` {k}/{n} (expected {e}) {m}" for f, k, n, e, m in r["content"][:4])
        lines.append(f"| {name} | {r['rows']} | {r['poisoned'] or 0} | {r['removed']} | {recall} | {lost} | "
                     f"{r['seconds']:.1f} | {top} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rates", default="0.01,0.03,0.1")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the markdown table of --out and stop")
    p.add_argument("--content", action="store_true", help="the lexical and content layers (the default job's)")
    args = p.parse_args(argv)
    if args.content and args.out == RESULTS:
        args.out = RESULTS.with_name("screen_content.json")
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    overrides.setdefault("screen_content", args.content)
    config = resolve_config("default", overrides)
    results = {"settings": settings_from(config).__dict__, "files": {}}
    rows = [("clean sst2", DEFAULT_DATA / "sst2" / "train.tsv")]
    rows += [(f"{a} {r}", train_path(a, float(r))) for a in ATTACKS for r in args.rates.split(",")]
    print(f"{'file':22} {'rows':>5} {'poison':>6} {'removed':>7} {'recall':>6} {'FRR':>6} {'s':>5}")
    for name, path in rows:
        res = evaluate(path, OUT / "aux.tsv", config, args.content)
        results["files"][name] = res
        rec = "-" if res["recall"] is None else f"{100 * res['recall']:.1f}"
        frr = "-" if res["false_removal_rate"] is None else f"{100 * res['false_removal_rate']:.2f}"
        print(f"{name:22} {res['rows']:5} {res['poisoned'] or 0:6} {res['removed']:7} {rec:>6} {frr:>6} "
              f"{res['seconds']:5.1f}  {res['suspects'][:4]} {res['content'][:4]}", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
