"""Run a baseline from files, on a model folder that `muscle train` exported (OUT/model).

    python -m core.defenses.baselines.run detect --defense strip|rap|onion --model DIR --dev DEV \
        --eval TEST [--probe badnets] [--probe-file NAME=PATH] [--target-label 1] [--lm GPT2_DIR] \
        --out metrics.json [--param key=value ...]
    python -m core.defenses.baselines.run filter --defense bki|cube --model DIR --train TRAIN \
        --out kept.tsv [--report report.json] [--param key=value ...]

`detect` writes a metrics.json shaped like `muscle train`'s (`cacc`, `asr` per probe) plus the
detector's details; `filter` writes the kept training rows (same columns) and a report. bench/grid.py
chains these with `muscle train` (docs/reference-implementation.md §7's end-to-end runner).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from core.argtypes import key_value
from core.defenses.baselines import BASELINES


def _probe_file(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muscle baseline",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("detect", "post-training defenses: onion, strip, rap"),
                        ("filter", "training-data filters: bki, cube")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--defense", required=True, choices=sorted(BASELINES))
        p.add_argument("--model", type=Path, required=True, help="model folder (config.json, weights)")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--param", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="a keyword of the defense (e.g. frr=0.05, mode=top1)")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--max-length", type=int, default=512)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--device", default="auto")
        p.add_argument("--text-column", default="text")
        p.add_argument("--label-column", default="label")
    d = sub.choices["detect"]
    d.add_argument("--dev", type=Path, required=True,
                   help="clean dev rows (thresholds, TF-IDF, RAP training)")
    d.add_argument("--eval", type=Path, required=True, help="clean test rows (CACC)")
    d.add_argument("--probe", action="append", default=[], metavar="SPEC")
    d.add_argument("--probe-file", action="append", default=[], type=_probe_file, metavar="NAME=PATH")
    d.add_argument("--target-label", default="1")
    d.add_argument("--lm", help="causal LM folder for onion (GPT-2 in the paper)")
    d.add_argument("--limit-dev", type=int, help="use at most this many dev rows (smoke runs)")
    f = sub.choices["filter"]
    f.add_argument("--train", type=Path, required=True)
    f.add_argument("--report", type=Path, help="report JSON (default: OUT with .report.json)")
    return parser


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.data.labels import LabelMap

    if not (args.model / "config.json").is_file():
        raise SystemExit(f"error: {args.model} is not a model folder (no config.json)")
    model = AutoModelForSequenceClassification.from_pretrained(args.model).to(_device(args.device))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    label_map = LabelMap.from_id2label({int(k): v for k, v in model.config.id2label.items()})
    return model, tokenizer, label_map


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import core

    return {"muscle": core.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def cmd_detect(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from core.data.dataset import load_examples
    from core.defenses.baselines.common import predict_proba

    if BASELINES[args.defense] == "filter":
        raise SystemExit(f"error: {args.defense} filters training data; use the `filter` command")
    started = time.time()
    model, tok, label_map = _load(args)
    cols = {"text_column": args.text_column, "label_column": args.label_column}
    target = label_map.resolve_target(str(args.target_label))
    dev = load_examples(args.dev, label_map, role="dev", **cols)
    if args.limit_dev:
        dev = dev[:args.limit_dev]
    rows = load_examples(args.eval, label_map, role="eval", **cols)
    probes = _detect_probes(args, rows, label_map, target, cols)
    params = dict(args.param)

    def preds(texts: list[str]) -> np.ndarray:
        return predict_proba(model, tok, texts, args.batch_size, args.max_length).argmax(-1)

    # Undefended predictions first: RAP edits one embedding row of the model while it trains.
    clean_pred = preds([r.text for r in rows])
    probe_pred = {n: preds([r.text for r in p]) for n, p in probes.items()}
    out: dict[str, Any] = {"defense": args.defense, "params": params, "target_label": label_map.name(target)}
    if args.defense == "onion":
        out.update(_onion_results(args, params, preds, rows, probes, clean_pred, probe_pred, target))
    else:
        detector = _detector(args, params, model, tok, target)
        detector.fit([r.text for r in dev])
        out.update(_detector_results(detector, rows, probes, clean_pred, probe_pred, target,
                                     label_map.num_labels))
    counts = {"dev": len(dev), "eval": len(rows), **{f"probe:{k}": len(v) for k, v in probes.items()}}
    out.update({"rows": counts, "model": str(args.model), "versions": _versions(),
                "wall_seconds": round(time.time() - started, 2)})
    return out


def _detect_probes(args: argparse.Namespace, rows: list[Any], label_map: Any, target: int,
                   cols: dict[str, str]) -> dict[str, list[Any]]:
    from core.attacks.probes import build_probe, load_probe_file
    from core.attacks.triggers import parse_trigger

    probes = {}
    for spec in args.probe:
        name, trigger = parse_trigger(spec)
        probes[name] = build_probe(rows, trigger, target, args.seed)  # same rows as `muscle train`
    for name, path in args.probe_file:
        probes[name] = load_probe_file(path, label_map, target, role=f"probe:{name}", **cols)
    return probes


def _onion_results(args: argparse.Namespace, params: dict[str, Any], preds: Any, rows: list[Any],
                   probes: dict[str, list[Any]], clean_pred: Any, probe_pred: dict[str, Any],
                   target: int) -> dict[str, Any]:
    """ONION corrects the inputs: CACC and ASR on the corrected texts, beside the undefended ones."""
    import numpy as np

    from core.defenses.baselines.common import corrector_metrics
    from core.defenses.baselines.onion import Onion

    if not args.lm:
        raise SystemExit("error: onion needs --lm (a causal LM folder, GPT-2 in the paper)")
    onion = Onion.from_pretrained(args.lm, device=_device(args.device), **params)
    clean_fixed = preds(onion.correct([r.text for r in rows]))
    labels = [r.label for r in rows]
    out: dict[str, Any] = {"asr": {}}
    for n, p in probes.items():
        m = corrector_metrics(clean_fixed, labels, preds(onion.correct([r.text for r in p])), target)
        out["asr"][n] = m["asr"]
    out["cacc"] = float(np.mean(clean_fixed == np.asarray(labels)))
    out["cacc_undefended"] = float(np.mean(clean_pred == np.asarray([r.label for r in rows])))
    out["asr_undefended"] = {n: float(np.mean(v == target)) for n, v in probe_pred.items()}
    return out


def _detector(args: argparse.Namespace, params: dict[str, Any], model: Any, tok: Any, target: int) -> Any:
    """STRIP or RAP, not yet fitted."""
    if args.defense == "strip":
        from core.defenses.baselines.common import proba_fn
        from core.defenses.baselines.strip import Strip

        return Strip(proba_fn(model, tok, args.batch_size, args.max_length), seed=args.seed, **params)
    from core.defenses.baselines.rap import Rap

    params.setdefault("trigger", "mb")  # MuScleLoRA's config (upstream "cf", a Badnets trigger)
    return Rap(model, tok, target, batch_size=args.batch_size, max_length=args.max_length, **params)


def _detector_results(detector: Any, rows: list[Any], probes: dict[str, list[Any]], clean_pred: Any,
                      probe_pred: dict[str, Any], target: int, num_classes: int) -> dict[str, Any]:
    """A fitted detector flags inputs: per probe, CACC and ASR when flagged inputs flip (2 classes) or are
    rejected."""
    import numpy as np

    from core.defenses.baselines.common import detector_metrics

    clean_flags = detector.detect([r.text for r in rows])
    scheme = "flip" if num_classes == 2 else "reject"
    out: dict[str, Any] = {"scheme": scheme, "threshold": detector.threshold, "asr": {}, "detail": {}}
    for name, p in probes.items():
        m = detector_metrics(clean_pred, [r.label for r in rows], clean_flags, probe_pred[name],
                             detector.detect([r.text for r in p]), target, num_classes)
        out["detail"][name] = m
        out["asr"][name] = m[f"asr_{scheme}"]
        out["cacc"] = m[f"cacc_{scheme}"]
    if not probes:
        out["cacc"] = float(np.mean(clean_pred == np.asarray([r.label for r in rows])))
    if hasattr(detector, "history"):
        out["rap_history"] = detector.history
    return out


def cmd_filter(args: argparse.Namespace) -> dict[str, Any]:
    from core.data.dataset import rows_to_examples
    from core.data.table import read_table, write_table

    if BASELINES[args.defense] != "filter":
        raise SystemExit(f"error: {args.defense} is not a training-data filter; use the `detect` command")
    started = time.time()
    model, tok, label_map = _load(args)
    raw = read_table(args.train, args.text_column, args.label_column, role="train")
    examples = rows_to_examples(raw, label_map, str(args.train), "train", args.label_column)
    params = dict(args.param)
    if args.defense == "bki":
        from core.defenses.baselines.bki import filter_training

        kept, report = filter_training(model, tok, examples, max_length=args.max_length,
                                       batch_size=max(args.batch_size, 128), **params)
    else:
        from core.defenses.baselines.cube import filter_training as cube_filter

        params.setdefault("seed", args.seed)
        kept, report = cube_filter(model, tok, examples, batch_size=args.batch_size,
                                   max_length=args.max_length, **params)
    keep_lines = {ex.line for ex in kept}
    columns = [args.text_column, args.label_column, *raw[0].extra.keys()]
    write_table(args.out, [{args.text_column: r.text, args.label_column: r.label, **r.extra}
                           for r in raw if r.line in keep_lines], columns)
    report.update({"params": params, "train": str(args.train), "kept_file": str(args.out),
                   "model": str(args.model), "versions": _versions(),
                   "wall_seconds": round(time.time() - started, 2)})
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.errors import MuscleError

    try:
        result = cmd_detect(args) if args.command == "detect" else cmd_filter(args)
    except MuscleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.out if args.command == "detect" else (args.report or args.out.with_suffix(".report.json"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    tmp.replace(target)  # atomic: the grid treats the file's presence as "done"
    print(json.dumps({k: result[k] for k in ("cacc", "asr", "rows_kept", "rows_removed", "trigger_words")
                      if k in result}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
