"""Grid runner: defense × attack × dataset × seed, each cell a background `muscle` subprocess.

    python bench/grid.py run --defenses vanilla,lora,muscle,onion,strip,rap,bki,cube \
        --attacks badnets,addsent,hiddenkiller --seeds 42 --profile reference [--parallel 1] [--dry-run]
    python bench/grid.py status [same selection]
    python bench/render.py            # tables + scatter from the JSONL

* Data (from ../shared/data, never copied into git): aux = 96 random clean dev rows (seed 42),
  select = the rest of dev, eval = test. Badnets/Addsent training sets come from `muscle poison`
  (Badnets clean-label, Addsent mix, as the authors); HiddenKiller's from the authors' released
  poisoned SST-2 (20% mix), thinned to --rate by putting the clean row back for the unchosen ones.
  HiddenKiller's probe is `sst2-hiddenkiller/test.tsv` (orig_label 0). Everything lands under
  bench/runs/ (gitignored).
* A cell is done when `cells/<defense>/metrics.json` exists; done cells are skipped, training runs
  whose folder exists are continued with `--resume`. Identical training runs (the vanilla cell, ONION's
  and BKI's victims) share one folder, keyed by a hash of their arguments.
* Every finished cell (ok or failed) is appended to the JSONL (default bench/results/grid.jsonl) with
  its resolved config, versions, metrics, wall time and machine.
* End-to-end baselines (docs/reference-implementation.md §7): the victim is trained with
  `muscle train --method vanilla` (ONION, BKI: 10 epochs; STRIP, RAP: 5 epochs with 3 warm-up;
  CUBE: 1 epoch), then `python -m core.defenses.baselines.run` detects or filters; BKI/CUBE retrain
  on the kept rows (5 epochs, 3 warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/grid.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from core.config import METHODS, resolve_config  # noqa: E402 - light: pydantic only
from core.defenses.baselines import BASELINES, FILTERED_TRAINING, VICTIM_TRAINING  # noqa: E402

DEFAULT_RUNS = ROOT / "bench" / "runs"
DEFAULT_RESULTS = ROOT / "bench" / "results" / "grid.jsonl"
# MUSCLE_BENCH_DATA: another copy of ../shared/data (a device machine, where ../shared does not travel)
DEFAULT_DATA = Path(os.environ.get("MUSCLE_BENCH_DATA", ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class Attack:
    name: str
    mode: str  # clean | dirty | mix
    prebuilt: bool = False  # training set from a released poisoned file, not `muscle poison`


ATTACKS: dict[str, Attack] = {
    "badnets": Attack("badnets", "clean"),  # clean-label, as the authors' configs
    "addsent": Attack("addsent", "mix"),
    "hiddenkiller": Attack("hiddenkiller", "mix", prebuilt=True),
}
DATASETS: dict[str, dict[str, str]] = {"sst2": {"clean": "sst2", "hiddenkiller": "sst2-hiddenkiller"}}


@dataclass
class Options:
    profile: str = "reference"
    model: str | None = None
    epochs: int | None = None  # overrides every training run's epochs (smoke runs)
    batch_size: int | None = None
    max_length: int | None = None
    lr: float | None = None
    device: str | None = None
    sets: list[str] = field(default_factory=list)  # KEY=VALUE passed to every `muscle train`
    rate: float = 0.1
    target_label: str = "1"
    aux_size: int = 96
    aux_seed: int = 42
    limit_train: int | None = None
    limit_eval: int | None = None
    limit_dev: int | None = None  # dev rows the post-training baselines fit on (smoke runs)
    lm: str | None = None  # causal LM folder for ONION
    baseline_params: dict[str, list[str]] = field(default_factory=dict)  # defense -> KEY=VALUE
    tag: str = "main"


@dataclass
class Step:
    name: str
    argv: list[str]
    done: str  # the file whose existence means the step is finished
    out_dir: str | None = None  # a `muscle train` out folder (shared; locked; --resume when present)


@dataclass
class Cell:
    tag: str
    dataset: str
    attack: str
    defense: str
    seed: int
    kind: str
    dir: str
    steps: list[Step]
    train_dir: str | None = None  # where the reported model's metrics.json is (method, filter cells)
    victim_dir: str | None = None
    report: str | None = None  # filter report

    @property
    def id(self) -> str:
        return f"{self.tag}/{self.dataset}/{self.attack}/s{self.seed}/{self.defense}"

    @property
    def metrics_path(self) -> Path:
        return Path(self.dir) / "metrics.json"


# ---------------------------------------------------------------------------------------------------
# Data


@dataclass
class DataPaths:
    train: Path
    aux: Path
    select: Path
    eval: Path
    probe_args: list[str]


def _read(path: Path) -> list[Any]:
    from core.data.table import read_table

    return read_table(path, role="data")


def _write(path: Path, rows: list[Any], extra: tuple[str, ...] = ()) -> None:
    from core.data.table import write_table

    columns = ["text", "label", *extra]
    write_table(path, [{"text": r.text, "label": r.label, **{c: r.extra.get(c, "") for c in extra}}
                       for r in rows], columns)


def _limited(rows: list[Any], limit: int | None, seed: int) -> list[Any]:
    if limit is None or limit >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def data_dir(runs: Path, dataset: str, opts: Options) -> Path:
    suffix = "".join([f"-train{opts.limit_train}" if opts.limit_train else "",
                      f"-eval{opts.limit_eval}" if opts.limit_eval else ""])
    return runs / "data" / f"{dataset}{suffix}"


def prepare_data(dataset: str, attack: str, seed: int, opts: Options, data_root: Path, runs: Path,
                 muscle: list[str], dry_run: bool, log: Any = print) -> DataPaths:
    """Write (once) the splits, the poisoned training set and the probe; return their paths."""
    src = data_root / DATASETS[dataset]["clean"]
    out = data_dir(runs, dataset, opts)
    aux = out / f"aux{opts.aux_size}-s{opts.aux_seed}.tsv"
    # select = the dev rows not in aux; the name carries the aux size when it is not the default 96
    sized = "" if opts.aux_size == Options.aux_size else f"-aux{opts.aux_size}"
    select = out / f"select{sized}-s{opts.aux_seed}.tsv"
    evalp = out / "eval.tsv" if opts.limit_eval else src / "test.tsv"
    clean_train = out / "train-clean.tsv" if opts.limit_train else src / "train.tsv"
    spec = ATTACKS[attack]
    train = out / f"train-{attack}-{spec.mode}-{opts.rate:g}-t{opts.target_label}-s{seed}.tsv"
    probe_args = ["--probe", attack]
    if spec.prebuilt:
        probe = out / f"probe-{attack}.tsv"
        probe_args = ["--probe-file", f"{attack}={probe}"]
    if dry_run:
        log(f"# data: {aux.name}, {select.name} from {src / 'dev.tsv'}; train {train}")
        if not spec.prebuilt and not train.exists():
            log(shlex.join([*muscle, *poison_args(clean_train, train, attack, opts, seed)]))
        return DataPaths(train, aux, select, evalp, probe_args)

    out.mkdir(parents=True, exist_ok=True)
    with _locked(out / ".prepare.lock"):
        if not aux.exists() or not select.exists():
            dev = _read(src / "dev.tsv")
            if opts.aux_size >= len(dev):
                raise SystemExit(f"error: aux size {opts.aux_size} >= dev rows {len(dev)}")
            picked = set(random.Random(opts.aux_seed).sample(range(len(dev)), opts.aux_size))
            _write(select, [r for i, r in enumerate(dev) if i not in picked])
            _write(aux, [r for i, r in enumerate(dev) if i in picked])
        if opts.limit_eval and not evalp.exists():
            _write(evalp, _limited(_read(src / "test.tsv"), opts.limit_eval, 42))
        if opts.limit_train and not clean_train.exists():
            _write(clean_train, _limited(_read(src / "train.tsv"), opts.limit_train, 42))
        if not train.exists():
            if spec.prebuilt:
                build_hiddenkiller_train(data_root / DATASETS[dataset][attack], src / "train.tsv", train,
                                         opts.rate, seed, opts.limit_train)
            else:
                argv = [*muscle, *poison_args(clean_train, train, attack, opts, seed)]
                log(shlex.join(argv))
                subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        if spec.prebuilt:
            probe = out / f"probe-{attack}.tsv"
            if not probe.exists():
                rows = [r for r in _read(data_root / DATASETS[dataset][attack] / "test.tsv")
                        if r.extra.get("orig_label", r.label) != opts.target_label]
                _write(probe, _limited(rows, opts.limit_eval, 42), ("poisoned", "orig_label"))
    return DataPaths(train, aux, select, evalp, probe_args)


def poison_args(clean: Path, out: Path, attack: str, opts: Options, seed: int) -> list[str]:
    return ["poison", "--in", str(clean), "--out", str(out), "--attack", attack, "--rate", f"{opts.rate:g}",
            "--target-label", opts.target_label, "--mode", ATTACKS[attack].mode, "--seed", str(seed)]


def build_hiddenkiller_train(poisoned_dir: Path, clean_train: Path, out: Path, rate: float, seed: int,
                             limit: int | None) -> dict[str, int]:
    """The released file is SST-2 train with its first 1,383 rows (20%, "mix") replaced by paraphrases,
    row-aligned with the clean file. Keep int(rate·N) of them (seeded) and restore the clean row for the
    rest, which is "mix" poisoning at `rate` (rate must not exceed the released share)."""
    poisoned = _read(poisoned_dir / "train.tsv")
    clean = _read(clean_train)
    if len(poisoned) != len(clean):
        raise SystemExit(f"error: {poisoned_dir / 'train.tsv'} and {clean_train} are not row-aligned")
    index = _limited(list(range(len(clean))), limit, 42)
    candidates = [i for i in index if poisoned[i].extra.get("poisoned") == "1"]
    n = int(rate * len(index))
    if n > len(candidates):
        raise SystemExit(f"error: rate {rate} needs {n} poisoned rows; "
                         f"the released file has {len(candidates)}")
    chosen = set(random.Random(seed).sample(candidates, n))
    rows = []
    for i in index:
        if i in chosen:
            rows.append(poisoned[i])
        else:
            c = clean[i]
            rows.append(type(c)(text=c.text, label=c.label, line=c.line,
                                extra={"poisoned": "0", "orig_label": c.label or ""}))
    _write(out, rows, ("poisoned", "orig_label"))
    return {"rows": len(rows), "poisoned": n}


# ---------------------------------------------------------------------------------------------------
# Planning


def muscle_command() -> list[str]:
    exe = Path(sys.executable).parent / "muscle"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]


def train_args(data: DataPaths, opts: Options, seed: int, method: str, train: Path | None = None,
               epochs: int | None = None, warmup: float | None = None) -> list[str]:
    argv = ["train", "--train", str(train or data.train), "--aux", str(data.aux),
            "--select", str(data.select), "--eval", str(data.eval), *data.probe_args,
            "--target-label", opts.target_label,
            "--method", method, "--profile", opts.profile, "--seed", str(seed)]
    for flag, value in (("--model", opts.model), ("--batch-size", opts.batch_size),
                        ("--max-length", opts.max_length), ("--lr", opts.lr), ("--device", opts.device)):
        if value is not None:
            argv += [flag, str(value)]
    # Leave out values equal to the profile's, so identical runs get identical arguments (and share a
    # folder): the vanilla cell is then also ONION's and BKI's victim.
    profile = resolve_config(opts.profile)
    if epochs == profile.epochs:
        epochs = None
    if warmup is not None and warmup == profile.warmup_ratio:
        warmup = None
    epochs = opts.epochs if opts.epochs is not None else epochs
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    if warmup is not None:
        argv += ["--set", f"warmup_ratio={warmup:g}"]
    for kv in opts.sets:
        argv += ["--set", kv]
    return argv + ["--no-progress"]


def _signature(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:10]


def train_step(name: str, base: Path, muscle: list[str], argv: list[str]) -> Step:
    method = argv[argv.index("--method") + 1]
    out = base / "train" / f"{method}-{_signature(argv)}"
    return Step(name, [*muscle, *argv, "--out", str(out)], str(out / "metrics.json"), str(out))


def plan_cell(dataset: str, attack: str, defense: str, seed: int, data: DataPaths, opts: Options,
              runs: Path, muscle: list[str]) -> Cell:
    base = runs / opts.tag / dataset / attack / f"s{seed}"
    cell_dir = base / "cells" / defense
    if defense in METHODS:
        step = train_step("train", base, muscle, train_args(data, opts, seed, defense))
        return Cell(opts.tag, dataset, attack, defense, seed, "method", str(cell_dir), [step],
                    train_dir=step.out_dir)
    if defense not in BASELINES:
        raise SystemExit(f"error: unknown defense {defense!r}; "
                         f"methods {list(METHODS)}, baselines {list(BASELINES)}")
    epochs, warmup = VICTIM_TRAINING[defense]
    victim = train_step("victim", base, muscle, train_args(data, opts, seed, "vanilla", None, epochs, warmup))
    runner = [sys.executable, "-m", "core.defenses.baselines.run"]
    params = [a for kv in opts.baseline_params.get(defense, []) for a in ("--param", kv)]
    common = ["--defense", defense, "--model", str(Path(victim.out_dir or "") / "model"), "--seed", str(seed),
              *(["--device", opts.device] if opts.device else []),
              *(["--max-length", str(opts.max_length)] if opts.max_length else []), *params]
    kind = BASELINES[defense]
    if kind in ("detector", "corrector"):
        argv = [*runner, "detect", *common, "--dev", str(data.select), "--eval", str(data.eval),
                *data.probe_args, "--target-label", opts.target_label,
                *(["--limit-dev", str(opts.limit_dev)] if opts.limit_dev else []),
                "--out", str(cell_dir / "detect.json")]
        if defense == "onion":
            argv += ["--lm", opts.lm or "gpt2"]
        # The cell's metrics.json (its "done" mark) is written only after every step succeeded.
        detect = Step("detect", argv, str(cell_dir / "detect.json"))
        return Cell(opts.tag, dataset, attack, defense, seed, kind, str(cell_dir), [victim, detect],
                    victim_dir=victim.out_dir)
    kept = cell_dir / "filtered.tsv"
    report = cell_dir / "filtered.report.json"
    filt = Step("filter", [*runner, "filter", *common, "--train", str(data.train), "--out", str(kept),
                           "--report", str(report)], str(report))
    f_epochs, f_warmup = FILTERED_TRAINING
    final = train_step("final", base, muscle, train_args(data, opts, seed, "vanilla", kept, f_epochs,
                                                         f_warmup))
    return Cell(opts.tag, dataset, attack, defense, seed, kind, str(cell_dir), [victim, filt, final],
                train_dir=final.out_dir, victim_dir=victim.out_dir, report=str(report))


# ---------------------------------------------------------------------------------------------------
# Running one cell (in its own process: `grid.py cell SPEC`)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock: cells sharing a training run (or the data preparation) wait for each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _terminate_on_sigterm() -> None:
    """SIGTERM (timeout, kill) behaves like Ctrl-C, so the finally blocks stop our own children."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def _run_child(argv: list[str]) -> int:
    proc = subprocess.Popen(argv, cwd=ROOT)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop the training run; its checkpoints stay for --resume
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)


def run_cell(cell: Cell) -> int:
    started = time.time()
    timings: dict[str, float] = {}
    for step in cell.steps:
        if Path(step.done).exists():
            print(f"[grid] {step.name}: done already ({step.done})", flush=True)
            continue
        lock = Path(step.out_dir + ".lock") if step.out_dir else Path(cell.dir) / f".{step.name}.lock"
        with _locked(lock):
            if Path(step.done).exists():  # another cell finished this shared run while we waited
                continue
            argv = list(step.argv)
            if step.out_dir and Path(step.out_dir).exists():
                argv.append("--resume")  # an interrupted run continues from its last epoch checkpoint
            print(f"[grid] {step.name}: {shlex.join(argv)}", flush=True)
            t0 = time.time()
            rc = _run_child(argv)
            timings[step.name] = round(time.time() - t0, 2)
            if rc != 0 or not Path(step.done).exists():
                print(f"[grid] {step.name} failed with exit code {rc}", flush=True)
                return rc or 1
    metrics = cell_metrics(cell)
    metrics["grid"] = {"step_seconds": timings, "cell_seconds": round(time.time() - started, 2)}
    tmp = cell.metrics_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, cell.metrics_path)
    return 0


def cell_metrics(cell: Cell) -> dict[str, Any]:
    """What the cell reports: the training run's metrics (method, filter) or the detector's."""
    if cell.kind in ("detector", "corrector"):
        metrics = json.loads((Path(cell.dir) / "detect.json").read_text())
    else:
        metrics = json.loads((Path(cell.train_dir or "") / "metrics.json").read_text())
    if cell.victim_dir:
        victim = json.loads((Path(cell.victim_dir) / "metrics.json").read_text())
        keys = ("cacc", "asr", "best_epoch", "config", "wall_seconds")
        metrics["victim"] = {k: victim.get(k) for k in keys}
        metrics.setdefault("config", victim.get("config"))
        metrics.setdefault("versions", victim.get("versions"))
    if cell.report:
        metrics["filter_report"] = json.loads(Path(cell.report).read_text())
    metrics["cell"] = cell.id
    return metrics


# ---------------------------------------------------------------------------------------------------
# Recording and scheduling


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            info["gpus"] = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def make_record(cell: Cell, status: str, rc: int | None, wall: float | None, opts: Options) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema": 1, "cell": cell.id, "tag": cell.tag, "dataset": cell.dataset, "attack": cell.attack,
        "defense": cell.defense, "seed": cell.seed, "kind": cell.kind, "status": status, "returncode": rc,
        "wall_seconds": wall, "machine": machine_info(), "options": asdict(opts),
        "commands": [shlex.join(s.argv) for s in cell.steps], "train_dir": cell.train_dir,
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if status == "ok":
        m = json.loads(cell.metrics_path.read_text())
        asr = m.get("asr") or {}
        rec.update({"cacc": m.get("cacc"), "asr": asr.get(cell.attack) if isinstance(asr, dict) else asr,
                    "asr_all": asr, "config": m.get("config"), "versions": m.get("versions"), "metrics": m})
        if wall is None:
            rec["wall_seconds"] = (m.get("grid") or {}).get("cell_seconds") or m.get("wall_seconds")
    else:
        log = Path(cell.dir) / "log.txt"
        rec["log_tail"] = log.read_text(errors="replace")[-2000:] if log.exists() else None
    return rec


def append_record(results: Path, rec: dict[str, Any]) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as fh:  # one line per write: a reader never sees half a record
        fh.write(json.dumps(rec, sort_keys=True, default=str) + "\n")


def recorded_ok(results: Path) -> set[str]:
    if not results.exists():
        return set()
    done = set()
    for line in results.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rec = json.loads(line)
            if rec.get("status") == "ok":
                done.add(rec["cell"])
    return done


def schedule(cells: list[Cell], opts: Options, results: Path, parallel: int, poll: float = 2.0) -> int:
    """Run pending cells, at most `parallel` at once; returns the number that failed."""
    already = recorded_ok(results)
    pending: list[Cell] = []
    for cell in cells:
        if cell.metrics_path.exists():
            if cell.id not in already:  # finished before an interruption, never recorded
                append_record(results, make_record(cell, "ok", 0, None, opts))
            print(f"skip  {cell.id} (done)", flush=True)
        else:
            pending.append(cell)
    running: list[tuple[Cell, subprocess.Popen[bytes], float, Any]] = []
    failed = 0
    try:
        while pending or running:
            while pending and len(running) < parallel:
                cell = pending.pop(0)
                Path(cell.dir).mkdir(parents=True, exist_ok=True)
                spec = Path(cell.dir) / "spec.json"
                spec.write_text(json.dumps(asdict(cell), indent=2) + "\n")
                log = open(Path(cell.dir) / "log.txt", "a")  # noqa: SIM115 - closed when the cell ends
                proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "cell", str(spec)],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
                running.append((cell, proc, time.time(), log))
                print(f"start {cell.id} (pid {proc.pid}, log {Path(cell.dir) / 'log.txt'})", flush=True)
            time.sleep(poll)
            for item in list(running):
                cell, proc, t0, log = item
                rc = proc.poll()
                if rc is None:
                    continue
                running.remove(item)
                log.close()
                ok = rc == 0 and cell.metrics_path.exists()
                failed += not ok
                append_record(results, make_record(cell, "ok" if ok else "failed", rc,
                                                   round(time.time() - t0, 2), opts))
                print(f"{'done ' if ok else 'FAIL '} {cell.id} ({time.time() - t0:.0f}s)", flush=True)
    except KeyboardInterrupt:
        for cell, proc, _, log in running:  # only the processes this grid started
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            log.close()
            print(f"stopped {cell.id}; rerun the same command to resume it", flush=True)
        raise
    return failed


# ---------------------------------------------------------------------------------------------------
# Command line


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/grid.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "status"):
        p = sub.add_parser(name)
        p.add_argument("--defenses", type=_csv, default=["vanilla", "lora", "muscle"])
        p.add_argument("--attacks", type=_csv, default=["badnets", "addsent", "hiddenkiller"])
        p.add_argument("--datasets", type=_csv, default=["sst2"])
        p.add_argument("--seeds", type=lambda v: [int(x) for x in _csv(v)], default=[42])
        p.add_argument("--tag", default="main", help="a name for this grid (its own run folders)")
        p.add_argument("--profile", default="reference", choices=["reference", "default"])
        p.add_argument("--model")
        p.add_argument("--epochs", type=int, help="override every training run's epochs (smoke runs)")
        p.add_argument("--batch-size", type=int)
        p.add_argument("--max-length", type=int)
        p.add_argument("--lr", type=float)
        p.add_argument("--device")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--rate", type=float, default=0.1)
        p.add_argument("--aux-size", type=int, default=Options.aux_size,
                       help="clean dev rows used as the trusted aux set (the rest of dev is select)")
        p.add_argument("--target-label", default="1")
        p.add_argument("--limit-train", type=int, help="sample this many training rows (smoke runs)")
        p.add_argument("--limit-eval", type=int, help="sample this many test/probe rows (smoke runs)")
        p.add_argument("--limit-dev", type=int, help="dev rows STRIP/RAP/ONION fit on (smoke runs)")
        p.add_argument("--lm", help="causal LM folder for ONION (GPT-2 in the paper)")
        p.add_argument("--baseline-param", action="append", default=[], metavar="DEFENSE:KEY=VALUE")
        p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS)
        p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
        p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
        p.add_argument("--parallel", type=int, default=1, help="cells at once (default 1: 2 CPU cores)")
        p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    c = sub.add_parser("cell", help="(internal) run one planned cell")
    c.add_argument("spec", type=Path)
    return parser


def options_from(args: argparse.Namespace) -> Options:
    params: dict[str, list[str]] = {}
    for item in args.baseline_param:
        defense, sep, kv = item.partition(":")
        if not sep or "=" not in kv:
            raise SystemExit(f"error: --baseline-param expects DEFENSE:KEY=VALUE, got {item!r}")
        params.setdefault(defense, []).append(kv)
    return Options(profile=args.profile, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                   max_length=args.max_length, lr=args.lr, device=args.device, sets=args.sets, rate=args.rate,
                   target_label=args.target_label, limit_train=args.limit_train, limit_eval=args.limit_eval,
                   limit_dev=args.limit_dev, aux_size=args.aux_size,
                   lm=args.lm, baseline_params=params, tag=args.tag)


def plan(args: argparse.Namespace, opts: Options, dry_run: bool, log: Any = print) -> list[Cell]:
    muscle = muscle_command()
    for name, known in (("dataset", DATASETS), ("attack", ATTACKS)):
        for value in getattr(args, name + "s"):
            if value not in known:
                raise SystemExit(f"error: unknown {name} {value!r}; choose from {sorted(known)}")
    cells = []
    for dataset in args.datasets:
        for attack in args.attacks:
            for seed in args.seeds:
                data = prepare_data(dataset, attack, seed, opts, args.data_root, args.runs_dir, muscle,
                                    dry_run, log)
                for defense in args.defenses:
                    cells.append(plan_cell(dataset, attack, defense, seed, data, opts, args.runs_dir, muscle))
    return cells


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _terminate_on_sigterm()
    if args.command == "cell":
        raw = json.loads(args.spec.read_text())
        raw["steps"] = [Step(**s) for s in raw["steps"]]
        try:
            return run_cell(Cell(**raw))
        except KeyboardInterrupt:
            return 130
    opts = options_from(args)
    dry = args.dry_run or args.command == "status"
    cells = plan(args, opts, dry_run=dry, log=print if args.command == "run" else (lambda *_: None))
    if args.command == "status":
        for cell in cells:
            done = sum(Path(s.done).exists() for s in cell.steps)
            state = "done" if cell.metrics_path.exists() else f"{done}/{len(cell.steps)} steps"
            print(f"{state:12s} {cell.id}")
        return 0
    if args.dry_run:
        for cell in cells:
            print(f"# {cell.id}" + ("  (done)" if cell.metrics_path.exists() else ""))
            for step in cell.steps:
                print(("# done: " if Path(step.done).exists() else "") + shlex.join(step.argv))
        return 0
    try:
        failed = schedule(cells, opts, args.results, max(1, args.parallel))
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"{len(cells) - failed} of {len(cells)} cells ok; results in {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
