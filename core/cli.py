"""`muscle` command line: train, poison, eval (the engine) and, when installed, serve / apikey (the service).

Every bad argument or file ends with a one-line `error: ...` naming what is at fault and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.argtypes import name_path, parse_value, split_pair
from core.config import METHODS, PROFILE_METHOD_VALUES, PROFILES, TrainConfig, resolve_config
from core.errors import JobCancelled, MuscleError
from core.metrics import FLOOR_MONITOR

if TYPE_CHECKING:
    from core.screen.content import EmbedProgress

EXIT_USAGE = 2
EXIT_CANCELLED = 130


def _parse_set(value: str) -> tuple[str, Any]:
    key, raw = split_pair(value)
    if key not in TrainConfig.model_fields:
        raise argparse.ArgumentTypeError(f"unknown setting {key!r}; see `muscle settings`")
    return key, parse_value(raw)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument("--label-column", default="label", help="column holding the label (default: label)")


def _add_probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe", action="append", default=[], metavar="SPEC",
                   help='built-in attack probe on the eval rows: badnets, addsent or insert:"text" '
                        "(repeatable)")
    p.add_argument("--probe-file", action="append", default=[], type=name_path, metavar="NAME=PATH",
                   help="a triggered test file; ASR over its rows whose orig_label (else label) is not "
                        "the target (repeatable)")
    p.add_argument("--target-label", default=None, help="the attack's target label, name or id (default 1)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("muscle-service")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muscle", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_command(sub)
    _add_screen_and_settings_commands(sub)
    _add_poison_command(sub)
    _add_eval_and_baseline_commands(sub)
    try:  # the service adds `serve` and `apikey`; the engine runs without it
        from core.service.cli import add_service_commands
    except ImportError:
        pass
    else:
        add_service_commands(sub)
    return parser


def _add_train_command(sub: Any) -> None:
    t = sub.add_parser("train", help="train a clean model from a possibly poisoned training file")
    t.add_argument("--train", type=Path, required=True, help="training file (CSV, TSV or JSONL)")
    t.add_argument("--aux", type=Path, required=True, help="small trusted clean auxiliary file")
    t.add_argument("--eval", type=Path, help="clean evaluation file (CACC); default: a train hold-out")
    t.add_argument("--select", type=Path,
                   help="clean held-back file for choosing the epoch; default: a slice of --aux")
    _add_probe_args(t)
    _add_data_args(t)
    t.add_argument("--method", choices=METHODS, default=None,
                   help="training method (default: vanilla, full fine-tuning of the screened rows)")
    t.add_argument("--profile", choices=sorted(PROFILES), default="default",
                   help="settings preset: reference = the authors' code exactly")
    t.add_argument("--model", default=None, help="minilm (default), a hub id or a local path")
    t.add_argument("--epochs", type=int, help="training epochs (default: the profile's; `muscle settings`)")
    t.add_argument("--batch-size", type=int, help="training rows per step (default: the profile's)")
    t.add_argument("--max-length", type=int, help="tokens per row after truncation (default: the profile's)")
    t.add_argument("--lr", type=float, help="peak learning rate (default: the profile's, per method)")
    t.add_argument("--seed", type=int, help="seed for initialisation, shuffling and sampling (default 42)")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    t.add_argument("--set", action="append", default=[], type=_parse_set, metavar="KEY=VALUE",
                   help="any other setting, e.g. --set mu_max=0.05 --set 'mslr_scales=[1,2,4]'")
    t.add_argument("--out", type=Path, required=True, help="output folder")
    t.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    t.set_defaults(func=cmd_train)


def _add_screen_and_settings_commands(sub: Any) -> None:
    sc = sub.add_parser("screen", help="audit a training file for poisoned rows without training")
    sc.add_argument("--train", type=Path, required=True, help="untrusted training file (CSV, TSV or JSONL)")
    sc.add_argument("--aux", type=Path, required=True, help="small trusted clean file (the same labels)")
    sc.add_argument("--out", type=Path, required=True,
                    help="output folder: screen.json (removed rows and suspects) and removed.tsv")
    sc.add_argument("--model", default=None,
                    help="backbone whose sentence embeddings the content screen reads: minilm (default), a hub id "
                         "or a local path")
    _add_data_args(sc)
    sc.add_argument("--set", action="append", default=[], type=_parse_set, metavar="KEY=VALUE",
                    help="a screen setting, e.g. --set screen_fdr=0.01 (`muscle settings` lists them)")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar for the embedding pass")
    sc.set_defaults(func=cmd_screen)

    s = sub.add_parser("settings", help="list every training setting with its profile values")
    s.set_defaults(func=cmd_settings)


def _add_poison_command(sub: Any) -> None:
    p = sub.add_parser("poison", help="make a poisoned copy of a dataset (simulation, as OpenBackdoor)")
    p.add_argument("--in", dest="inp", type=Path, required=True, help="clean input file")
    p.add_argument("--out", type=Path, required=True, help="poisoned output file (format by extension)")
    p.add_argument("--attack", required=True, help='badnets, addsent or insert:"text"')
    p.add_argument("--rate", type=float, default=0.1, help="poisoned share of all rows (default 0.1)")
    p.add_argument("--target-label", default="1", help="label the poisoned rows get (default 1)")
    p.add_argument("--mode", choices=["clean", "dirty", "mix"], default=None,
                   help="clean-label, dirty-label or mix (default: clean for badnets, mix otherwise)")
    p.add_argument("--seed", type=int, default=42, help="seed choosing the poisoned rows (default 42)")
    _add_data_args(p)
    p.set_defaults(func=cmd_poison)


def _add_eval_and_baseline_commands(sub: Any) -> None:
    e = sub.add_parser("eval", help="score a saved model folder on a clean file and attack probes")
    e.add_argument("--model", type=Path, required=True, help="a model folder (e.g. OUT/model)")
    e.add_argument("--eval", type=Path, required=True, help="clean evaluation file (CACC)")
    _add_probe_args(e)
    _add_data_args(e)
    e.add_argument("--batch-size", type=int, default=128, help="rows per evaluation batch (default 128)")
    e.add_argument("--max-length", type=int, default=512, help="tokens per row after truncation (default 512)")
    e.add_argument("--seed", type=int, default=42, help="seed for the built-in probes' trigger positions (default 42)")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("baseline", add_help=False,
                       help="end-to-end baselines: detect (onion, strip, rap) or filter (bki, cube); "
                            "`muscle baseline -h` for details")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="the baseline runner's own arguments (`muscle baseline -h`)")
    b.set_defaults(func=cmd_baseline)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    overrides: dict[str, Any] = {
        "method": args.method, "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
        "max_length": args.max_length, "lr": args.lr, "seed": args.seed, "device": args.device,
        "target_label": args.target_label,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}  # options not given
    overrides.update(dict(args.set))  # --set may give null on purpose
    try:
        return resolve_config(args.profile, overrides), set(overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise MuscleError(f"invalid settings: {exc}") from exc


class ProgressBar:
    """Renders engine progress events as a tqdm bar (step, loss, ETA) plus one line per epoch."""

    def __init__(self, enabled: bool, log_every_seconds: float = 60.0) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.log_every = log_every_seconds
        self.last_log = 0.0

    def __call__(self, event: Any) -> None:
        if event.kind == "step" and not self.enabled:  # logs: one line a minute instead of a bar
            now = time.monotonic()
            if now - self.last_log >= self.log_every or event.step == event.total_steps:
                self.last_log = now
                eta = f"{event.eta_seconds / 60:.1f} min" if event.eta_seconds is not None else "?"
                _stderr(f"step {event.step}/{event.total_steps} epoch {event.epoch} loss {event.loss:.4f} "
                        f"eta {eta}")
        elif event.kind == "step":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=event.total_steps, unit="step", dynamic_ncols=True, file=sys.stderr)
                self.bar.update(event.step - 1)  # resumed runs start mid-way
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}")
        elif event.kind == "epoch" and not event.replayed:  # a resumed run's earlier epochs were shown
            metrics = event.metrics or {}
            shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
            shown.update({k if k == FLOOR_MONITOR else f"asr:{k}": v
                          for k, v in (metrics.get("monitors") or {}).items()})
            line = f"epoch {event.epoch}: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            (self.bar.write if self.bar is not None else _stderr)(line)
        elif event.kind in ("phase", "log") and event.message:
            if event.phase in ("exporting", "evaluating", "done") and self.bar is not None:
                self.bar.close()
                self.bar = None
            _stderr(f"[{event.phase}] {event.message}")


@contextlib.contextmanager
def embedding_bar(enabled: bool) -> Iterator[EmbedProgress | None]:
    """A tqdm bar over the content screen's embedding pass (rows), closed on the way out."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bars: list[Any] = []  # made at the first batch, when the total is known

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="row", desc="content screen: embedding", dynamic_ncols=True,
                             file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from core.engine import JobInputs
    from core.pipeline import run_pipeline

    config, explicit = config_from_args(args)
    inputs = JobInputs(train=args.train, aux=args.aux, eval=args.eval, select=args.select,
                       probe_files=dict(args.probe_file), probes=tuple(args.probe),
                       text_column=args.text_column, label_column=args.label_column)
    if (args.out / "checkpoints").exists() and not args.resume and any((args.out / "checkpoints").iterdir()):
        raise MuscleError(f"{args.out} holds checkpoints of an earlier run: pass --resume to continue it, "
                          "or choose another --out")
    interrupted = {"flag": False}

    def on_sigint(signum: int, frame: Any) -> None:  # first Ctrl-C: stop after this step, keep checkpoint
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True
        _stderr("stopping after the current step (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = run_pipeline(inputs, config, args.out, ProgressBar(not args.no_progress),
                              lambda: interrupted["flag"], args.resume, explicit)
    finally:
        signal.signal(signal.SIGINT, previous)
    m = result.metrics
    print(json.dumps({"cacc": m["cacc"], "asr": m["asr"], "best_epoch": m["best_epoch"],
                      "out": str(result.out_dir)}, indent=2))
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from core.data.dataset import check_aux, load_examples
    from core.data.labels import LabelMap
    from core.data.table import read_table
    from core.screen.stage import screen_with

    sets = dict(args.set)
    unknown = sorted(k for k in sets if not k.startswith("screen_"))
    if unknown:
        raise MuscleError(f"not a screen setting: {', '.join(unknown)} (screen settings start with screen_)")
    if args.model is not None:
        sets["model"] = args.model
    try:
        config = resolve_config("default", sets)
    except ValueError as exc:
        raise MuscleError(f"invalid settings: {exc}") from exc
    cols = {"text_column": args.text_column, "label_column": args.label_column}
    raw = read_table(args.train, role="train", **cols)
    label_map = LabelMap.from_labels([r.label for r in raw if r.label is not None])
    train = load_examples(args.train, label_map, role="train", **cols)
    aux = load_examples(args.aux, label_map, role="aux", **cols)
    check_aux(aux, label_map, config.min_aux_per_class, str(args.aux))
    with embedding_bar(not args.no_progress) as progress:
        report = screen_with(config, train, aux, label_map.names, progress)
    json_path, tsv_path = report.write(args.out)
    summary = report.summary(max_suspects=10)
    print(json.dumps({k: summary[k] for k in ("rows_in", "rows_removed", "removed_per_rule", "seconds")}
                     | {"screen_json": str(json_path), "removed_tsv": str(tsv_path),
                        "suspects": [f"{s['feature']} (label {s['label']}, {s['label_rows']}/{s['rows']} rows, "
                                     f"{s['verdict']}, removed {s['removed']})" for s in summary["suspects"]]},
                     indent=2))
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    ref, default = resolve_config("reference"), resolve_config("default")
    for name, info in TrainConfig.model_fields.items():
        r, d = getattr(ref, name), getattr(default, name)
        print(f"{name:24s} default={d!r:28s} reference={r!r}")
        if info.description:
            print(textwrap.fill(info.description, width=100, initial_indent="    ", subsequent_indent="    "))
    print("\nper method, before your own settings:")
    for profile, methods in PROFILE_METHOD_VALUES.items():
        for method, values in methods.items():
            print(f"  {profile:10s} {method:14s} " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return 0


def cmd_poison(args: argparse.Namespace) -> int:
    from core.attacks.poison import poison_file

    mode = args.mode or ("clean" if args.attack == "badnets" else "mix")  # OpenBackdoor's settings
    if not 0 < args.rate < 1:
        raise MuscleError(f"--rate must be between 0 and 1, got {args.rate}")
    summary = poison_file(args.inp, args.out, args.attack, args.rate, args.target_label, mode, args.seed,
                          args.text_column, args.label_column)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.attacks.probes import build_probe, load_probe_file
    from core.attacks.triggers import parse_trigger
    from core.data.dataset import load_examples
    from core.data.labels import LabelMap
    from core.stages.evaluate import evaluate_classifier

    if not (args.model / "config.json").is_file():
        raise MuscleError(f"{args.model} is not a model folder (no config.json)")
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    label_map = LabelMap.from_id2label({int(k): v for k, v in model.config.id2label.items()})
    cols = {"text_column": args.text_column, "label_column": args.label_column}
    rows = load_examples(args.eval, label_map, role="eval", **cols)
    target = label_map.resolve_target(args.target_label or "1")
    probes = {}
    for spec in args.probe:
        name, trigger = parse_trigger(spec)
        probes[name] = build_probe(rows, trigger, target, args.seed)
    for name, path in args.probe_file:
        probes[name] = load_probe_file(path, label_map, target, role=f"probe:{name}", **cols)
    config = TrainConfig(eval_batch_size=args.batch_size, max_length=args.max_length)
    cacc, asr, floor = evaluate_classifier(model, tokenizer, rows, probes, target, config)
    print(json.dumps({"cacc": cacc, "asr": asr, "asr_floor": floor, "rows": len(rows)}, indent=2))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from core.defenses.baselines.run import main as baseline_main

    return baseline_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["baseline"]:  # its own parser, options (-h too) included
        from core.defenses.baselines.run import main as baseline_main

        return baseline_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MuscleError as exc:
        _stderr(f"error: {exc}")
        return EXIT_USAGE
    except JobCancelled:
        _stderr("cancelled: the last epoch checkpoint is kept; rerun with --resume to continue")
        return EXIT_CANCELLED
    except BrokenPipeError:
        # The reader went away (`muscle settings | head`): stop quietly, and point stdout at devnull so the
        # interpreter's final flush does not raise again (the recipe in Python's `signal` docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
