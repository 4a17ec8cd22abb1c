"""One call on a lent GPU: check the CUDA path, then run a queue of full-data e2e runs side by side.

    .venv/bin/python bench/gpu_batch.py pack             # here: fill .gpu/ (git-excluded) for the call
    python3 bench/gpu_batch.py device --deadline 450     # there (the device tool's command, see below)
    .venv/bin/python bench/gpu_batch.py unpack DIR       # here: the call's files -> bench/runs/e2e/
    .venv/bin/python bench/e2e.py record

What travels (the device tool carries at most 64 MiB): the backbone's weights rounded to fp16 (45 MB; the
device widens them back to fp32 before any run, so training is fp32-weighted as here), the screen's data
files and the copy of ../shared/data they read, and wheels for the few packages the device's image lacks.
The device command:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && \
    PYTHONPATH=/tmp/site python3 bench/gpu_batch.py device --deadline 450

`device` first trains 200 rows for one epoch on CUDA (fails fast if the path is broken), then runs the
queue (PLAN, in priority order) `--parallel` at a time until `--deadline` seconds, kills what is still
running, and leaves in $OUT a tarball of every run's metrics and logs (no weights) plus a progress log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu"
RUNS = ROOT / "bench" / "runs" / "e2e"
MODEL_THERE = Path("/tmp/minilm")

# Cells whose figure is near the goal's line or whose floor was a proxy, then the methods at 10%, then the
# cells the lexical screen already gets exactly (their default run is their backdoor-free run).
NEAR_LINE = [("hiddenkiller", 0.01, "default"), ("hiddenkiller", 0.01, "free"),
             ("stylebkd", 0.01, "default"), ("stylebkd", 0.1, "free"), ("stylebkd", 0.03, "default"),
             ("addsent", 0.01, "default"), ("addsent", 0.01, "free"),
             ("addsent", 0.1, "default"), ("addsent", 0.1, "free"),
             ("hiddenkiller", 0.03, "default"), ("hiddenkiller", 0.03, "free"),
             ("hiddenkiller", 0.1, "default"), ("hiddenkiller", 0.1, "free"), ("stylebkd", 0.1, "default")]
ATTACKS = ("badnets", "badnets-dirty", "addsent", "hiddenkiller", "stylebkd")
METHODS_AT_10 = [(a, 0.1, arm) for arm in ("noscreen", "bki", "cube", "lora", "muscle") for a in ATTACKS]
EXACT = [(a, r, "default") for a in ("badnets", "badnets-dirty") for r in (0.01, 0.03, 0.1)] + [
    ("addsent", 0.03, "default")]


def plan() -> list[tuple[str, str, float, str, list[str]]]:
    """(tag, attack, rate, arm, --set values) in the order they start. Tags: g<seed> = fp32 on the GPU;
    gauto = the shipped CUDA default (bf16 autocast)."""
    fp32 = ["precision=fp32"]
    runs = [("gauto", "badnets", 0.1, "default", ["seed=42"]), ("g42", "badnets", 0.1, "default", ["seed=42", *fp32])]
    runs += [(f"g{s}", a, r, arm, [f"seed={s}", *fp32]) for a, r, arm in NEAR_LINE for s in (1, 2)]
    runs += [("g42", a, r, arm, ["seed=42", *fp32]) for a, r, arm in METHODS_AT_10]
    runs += [("g42", a, r, arm, ["seed=42", *fp32]) for a, r, arm in NEAR_LINE]
    runs += [(f"g{s}", a, r, arm, [f"seed={s}", *fp32]) for a, r, arm in EXACT for s in (1, 2)]
    return runs


def copy_model(src: Path, dst: Path, dtype: str) -> None:
    """A model folder copied with its floating-point weights cast to `dtype` ("float16" to travel,
    "float32" to train on)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
    to = getattr(torch, dtype)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(to) if v.is_floating_point() else v for k, v in weights.items()},
              str(dst / "model.safetensors"))


def pack(_: argparse.Namespace) -> int:
    from bench.grid import DEFAULT_DATA
    from core.models.backbones import resolve_model_source

    PACK.mkdir(exist_ok=True)
    copy_model(Path(resolve_model_source("minilm")), PACK / "model", "float16")
    with tarfile.open(PACK / "data.tar.gz", "w:gz") as tar:
        tar.add(DEFAULT_DATA, arcname="shared-data")
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    print(f"packed {PACK}: {size / 2**20:.1f} MiB (wheels: {len(list((PACK / 'whl').glob('*.whl')))})")
    return 0


def environment(out: Path, limit: int | None) -> dict[str, str]:
    """Data and model in place; the environment every child process gets. `limit`: cut every data file to
    its first rows (a dry run of this script on a CPU)."""
    shared = Path("/tmp/shared-data-root")
    with tarfile.open(PACK / "data.tar.gz") as tar:
        tar.extractall(shared, filter="data")
    env = {**os.environ, "MUSCLE_BENCH_DATA": str(shared / "shared-data"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "bench/screen_data.py"], cwd=ROOT, env=env, check=True)
    if limit:
        from bench.screen_data import OUT as DATA

        for f in [*DATA.glob("*.tsv"), shared / "shared-data" / "sst2" / "test.tsv"]:
            f.write_text("\n".join(f.read_text().splitlines()[:limit + 1]) + "\n")
    copy_model(PACK / "model", MODEL_THERE, "float32")  # the carried fp16 weights back to fp32
    info = subprocess.run([sys.executable, "-c", "import torch, transformers, peft; "
                           "print(torch.__version__, transformers.__version__, peft.__version__, "
                           "torch.cuda.get_device_name(0))"], capture_output=True, text=True, env=env)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                         capture_output=True, text=True).stdout if shutil.which("nvidia-smi") else "no nvidia-smi\n"
    (out / "environment.txt").write_text(info.stdout + info.stderr + smi)
    print(info.stdout + info.stderr + smi, flush=True)
    return env


def smoke(env: dict[str, str], out: Path, device: str) -> int:
    """200 rows, one epoch, on CUDA with the shipped precision: imports, data, model and the CUDA path."""
    from bench.screen_data import OUT as DATA

    tiny = Path("/tmp/smoke")
    shutil.rmtree(tiny, ignore_errors=True)  # a warm machine keeps the last call's run: start afresh
    tiny.mkdir()
    lines = (DATA / "train-badnets-0.1.tsv").read_text().splitlines()
    (tiny / "train.tsv").write_text("\n".join(lines[:201]) + "\n")
    argv = [sys.executable, "-m", "core.cli", "train", "--train", str(tiny / "train.tsv"),
            "--aux", str(DATA / "aux.tsv"), "--select", str(DATA / "select.tsv"),
            "--eval", str(DATA / "select.tsv"), "--probe", "badnets", "--epochs", "1", "--device", device,
            "--model", str(MODEL_THERE), "--out", str(tiny / "out"), "--no-progress"]
    started = time.time()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    (out / "smoke.log").write_text(proc.stdout + proc.stderr)
    print(f"smoke rc={proc.returncode} in {time.time() - started:.0f} s", flush=True)
    if proc.returncode:
        print((proc.stdout + proc.stderr)[-4000:], flush=True)
    return proc.returncode


def run_queue(env: dict[str, str], out: Path, args: argparse.Namespace, started: float) -> None:
    parallel, deadline = args.parallel, args.deadline
    queue = [run for i, run in enumerate(plan()) if i >= args.skip and (not args.pick or i in args.pick)]
    running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    progress = open(out / "progress.txt", "a")

    def note(line: str) -> None:
        stamp = f"{time.time() - started:6.0f}s "
        progress.write(stamp + line + "\n")
        progress.flush()
        print(stamp + line, flush=True)

    launched = 0
    while running or (queue and (args.max_runs is None or launched < args.max_runs)):
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                note(f"done {name} rc={proc.returncode} {time.time() - t0:.0f}s")
                del running[name]
        if time.time() - started > deadline:
            for name, (proc, _) in running.items():
                proc.kill()
                note(f"killed {name} (deadline)")
            break
        while queue and len(running) < parallel and (args.max_runs is None or launched < args.max_runs):
            launched += 1
            tag, attack, rate, arm, sets = queue.pop(0)
            name = f"{tag}-{attack}-{rate:g}-{arm}"
            argv = [sys.executable, "bench/e2e.py", "run", "--tag", tag, "--attack", attack, "--rate", str(rate),
                    "--arm", arm, "--set", f"model={MODEL_THERE}", "--set", f"device={args.device}"]
            for s in [*sets, *args.set]:
                argv += ["--set", s]
            running[name] = (subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL), time.time())
            note(f"start {name}")
        time.sleep(2)
    note(f"queue left: {len(queue)} runs not started")


def collect(out: Path) -> None:
    """Every run's metrics, screen and filter reports, commands and logs; never weights or checkpoints."""
    keep = {"metrics.json", "filter.json", "command.txt", "log.txt", "screen.json"}
    with tarfile.open(out / "e2e-runs.tar.gz", "w:gz") as tar:
        for run in sorted(RUNS.glob("g*-*")):
            for f in sorted(run.rglob("*")):
                rel = f.relative_to(run)
                if f.is_file() and f.name in keep and len(rel.parts) <= 2 and "model" not in rel.parts:
                    tar.add(f, arcname=str(Path(run.name) / rel))


def device(args: argparse.Namespace) -> int:
    started = time.time()
    out = Path(os.environ.get("OUT", "/tmp/gpu-out"))
    out.mkdir(parents=True, exist_ok=True)
    env = environment(out, args.limit)
    if smoke(env, out, args.device):
        return 1
    try:
        run_queue(env, out, args, started)
    finally:
        collect(out)
    return 0


def unpack(args: argparse.Namespace) -> int:
    RUNS.mkdir(parents=True, exist_ok=True)
    with tarfile.open(Path(args.dir) / "e2e-runs.tar.gz") as tar:
        tar.extractall(RUNS, filter="data")
    print(f"unpacked into {RUNS}; now: .venv/bin/python bench/e2e.py record")
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack")
    d = sub.add_parser("device")
    d.add_argument("--parallel", type=int, default=8)
    d.add_argument("--deadline", type=float, default=450, help="seconds from start; then kill and collect")
    d.add_argument("--device", default="cuda")
    d.add_argument("--limit", type=int, help="cut every data file to its first N rows (a dry run on a CPU)")
    d.add_argument("--max-runs", type=int, help="start at most this many runs of the plan")
    d.add_argument("--skip", type=int, default=0, help="leave out the plan's first N runs")
    d.add_argument("--pick", type=lambda v: {int(i) for i in v.split(",")}, help="only these runs of the plan")
    d.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run (a dry run: epochs=1)")
    u = sub.add_parser("unpack")
    u.add_argument("dir")
    args = p.parse_args(argv)
    return {"pack": pack, "device": device, "unpack": unpack}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
