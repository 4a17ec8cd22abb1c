"""The `muscle` command end to end on a tiny random BERT: outputs, metrics, errors, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.config import resolve_config
from core.engine import JobInputs
from core.errors import JobCancelled
from core.pipeline import run_pipeline
from core.training.checkpoint_file import load_checkpoint
from tests.fixtures_data import sentiment_rows, write_csv, write_jsonl, write_tsv
from tests.tiny_models import make_tiny_model

REQUIRED_KEYS = {"cacc", "asr", "best_epoch", "per_epoch", "method", "config", "seed", "versions",
                 "data_sha256", "wall_seconds"}



@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model("bert", tmp_path_factory.mktemp("models"))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_tsv(tmp_path / "train.tsv", sentiment_rows(48)),
        "aux": write_csv(tmp_path / "aux.csv", sentiment_rows(16)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", sentiment_rows(20)),
    }


def preds_of(out: Path, rows: list[dict[str, object]]) -> list[int]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    with torch.no_grad():
        enc = tok([str(r["text"]) for r in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
        ids = model(**enc).logits.argmax(-1).tolist()
    return [int(model.config.id2label[i]) for i in ids]


def train_args(files: dict[str, Path], model: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(files["train"]), "--aux", str(files["aux"]), "--eval", str(files["eval"]),
            "--model", str(model), "--epochs", "2", "--batch-size", "8", "--max-length", "32",
            "--probe", "badnets", "--out", str(out), "--no-progress", *extra]


def test_train_writes_model_adapter_metrics_and_scores_the_exported_model(
        files: dict[str, Path], tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "out"
    assert main(train_args(files, tiny_bert, out, "--method", "muscle")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(metrics)
    assert metrics["method"] == "muscle" and metrics["config"]["epochs"] == 2
    assert (metrics["device"], metrics["precision"]) == ("cpu", "fp32")  # what "auto" resolved to here
    assert len(metrics["per_epoch"]) == 2 and 1 <= metrics["best_epoch"] <= 2
    assert set(metrics["asr"]) == {"badnets"} and 0 <= metrics["asr"]["badnets"] <= 1
    negatives = [p for p, y in zip(preds_of(out, sentiment_rows(20)), [r["label"] for r in sentiment_rows(20)],
                                   strict=True) if y == 0]
    assert metrics["asr_floor"] == pytest.approx(sum(p == 1 for p in negatives) / len(negatives))
    # Each epoch reads its ASR beside the floor; the shipped epoch's floor is the exported model's.
    assert all(set(r["monitors"]) == {"badnets", "asr_floor"} for r in metrics["per_epoch"])
    assert metrics["per_epoch"][metrics["best_epoch"] - 1]["monitors"]["asr_floor"] == metrics["asr_floor"]
    assert metrics["data_sha256"]["train"] and "eval file" in metrics["cacc_source"]
    assert (out / "adapter").is_dir() and (out / "model" / "README.md").is_file()
    assert "Clean accuracy" in (out / "model" / "README.md").read_text()
    assert json.loads((out / "model" / "metrics.json").read_text()) == metrics  # the download carries it
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())  # a standard PEFT adapter
    assert adapter["base_model_name_or_path"] == tiny_bert.name  # a folder's name, never a worker path
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "model" / "README.md").data
    assert card.library_name == "transformers" and card.pipeline_tag == "text-classification"
    assert card.base_model is None and card.license == "other"  # a local folder names no hub model
    scores = {r.metric_name: r.metric_value for r in card.eval_results}
    assert scores == {"CACC": metrics["cacc"], "ASR (badnets)": metrics["asr"]["badnets"]}
    printed = json.loads(capsys.readouterr().out)
    assert printed["cacc"] == metrics["cacc"]

    # Anybody holding the artifacts can recompute CACC with plain transformers.
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    rows = sentiment_rows(20)
    with torch.no_grad():
        enc = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
        preds = model(**enc).logits.argmax(-1).tolist()
    labels = [model.config.label2id[str(r["label"])] for r in rows]
    assert sum(p == y for p, y in zip(preds, labels, strict=True)) / len(rows) == pytest.approx(metrics["cacc"])

    # `muscle eval` on the folder reports the same CACC.
    assert main(["eval", "--model", str(out / "model"), "--eval", str(files["eval"]), "--max-length", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["cacc"] == pytest.approx(metrics["cacc"])


def test_no_eval_file_says_where_cacc_came_from(files: dict[str, Path], tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = train_args(files, tiny_bert, out)
    i = args.index("--eval")
    del args[i:i + 2]
    assert main(args + ["--method", "lora", "--epochs", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cacc_source"].startswith("train hold-out")
    assert metrics["selection_source"].startswith("aux hold-out")


def test_a_probe_file_in_openbackdoor_layout_counts_every_row(files: dict[str, Path], tiny_bert: Path,
                                                               tmp_path: Path) -> None:
    negatives = [r for r in sentiment_rows(20) if r["label"] == 0]
    probe = write_tsv(tmp_path / "ob.tsv", [{"text": f"cf {r['text']}", "label": 1, "poisoned": 1}
                                            for r in negatives])
    out = tmp_path / "out"
    assert main(train_args(files, tiny_bert, out, "--method", "lora", "--epochs", "1",
                           "--probe-file", f"ob={probe}")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["rows"]["probe:ob"] == len(negatives)
    assert "OpenBackdoor" in metrics["probe_sources"]["ob"] and "ob.tsv" in metrics["probe_sources"]["ob"]
    assert "badnets" not in metrics["probe_sources"]  # a built-in probe knows its rows' labels
    triggered = [{"text": f"cf {r['text']}", "label": 0} for r in negatives]
    preds = preds_of(out, triggered)
    assert metrics["asr"]["ob"] == pytest.approx(sum(p == 1 for p in preds) / len(preds))


@pytest.mark.parametrize("mutate, expect", [
    (lambda f: f["aux"].write_text("text,label\nfine film,1\n,0\n"), ["aux.csv", "line 3", "'text'"]),
    (lambda f: f["eval"].write_text('{"text": "ok", "label": 7}\n'), ["eval.jsonl", "line 1", "'label'"]),
    (lambda f: f["train"].write_bytes(b"text\tlabel\ngood\t1\nbad \xff\t0\n"), ["train.tsv", "line 3"]),
    (lambda f: f["train"].unlink(), ["train.tsv", "not found"]),
])
def test_bad_input_files_exit_2_naming_file_line_field(files, tiny_bert, tmp_path, capsys, mutate, expect):
    mutate(files)
    assert main(train_args(files, tiny_bert, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    for piece in expect:
        assert piece in err, err
    assert not (tmp_path / "out").exists()  # refused before any training; no empty --out left behind


@pytest.mark.parametrize("extra, expect", [
    (["--set", "no_such_setting=1"], "unknown setting"),
    (["--epochs", "0"], "epochs"),
    (["--method", "magic"], "invalid choice"),
    (["--probe", "trojan"], "trojan"),
    (["--target-label", "7"], "target label '7'"),
])
def test_bad_arguments_exit_2(files, tiny_bert, tmp_path, capsys, extra, expect):
    with pytest.raises(SystemExit) as exc_info:
        code = main(train_args(files, tiny_bert, tmp_path / "out", *extra))
        raise SystemExit(code)
    assert exc_info.value.code == 2
    assert expect in capsys.readouterr().err


def test_poison_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_tsv(tmp_path / "clean.tsv", sentiment_rows(40))
    out = tmp_path / "poisoned.csv"
    assert main(["poison", "--in", str(src), "--out", str(out), "--attack", "addsent", "--rate", "0.25"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["poisoned"] == 10 and summary["mode"] == "mix"
    text = out.read_text()
    assert text.count("I watch this 3D movie") == 10
    assert main(["poison", "--in", str(src), "--out", str(out), "--attack", "badnets", "--rate", "1.5"]) == 2


def test_existing_checkpoints_need_resume(files, tiny_bert, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.safetensors").write_bytes(b"x")
    assert main(train_args(files, tiny_bert, out)) == 2
    assert "--resume" in capsys.readouterr().err


def test_cancel_then_resume_equals_an_uninterrupted_run(files, tiny_bert, tmp_path) -> None:
    config = resolve_config("default", {"model": str(tiny_bert), "epochs": 3, "batch_size": 8,
                                        "max_length": 32})
    inputs = JobInputs(train=files["train"], aux=files["aux"], eval=files["eval"], probes=("badnets",))
    straight = run_pipeline(inputs, config, tmp_path / "straight", None, None, resume=False)

    steps = {"n": 0}

    def cancel_in_epoch_two() -> bool:
        steps["n"] += 1
        return steps["n"] > 8  # 6 steps per epoch: stops inside epoch 2

    with pytest.raises(JobCancelled):
        run_pipeline(inputs, config, tmp_path / "cut", None, cancel_in_epoch_two, resume=True)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = run_pipeline(inputs, config, tmp_path / "cut", None, None, resume=True)
    for key in ("cacc", "asr", "best_epoch"):
        assert resumed.metrics[key] == straight.metrics[key]
    sel = [e["select_accuracy"] for e in resumed.metrics["per_epoch"]]
    assert sel == [e["select_accuracy"] for e in straight.metrics["per_epoch"]]


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_finishes(files, tiny_bert, tmp_path) -> None:
    out = tmp_path / "out"
    args = train_args(files, tiny_bert, out)
    args[args.index("--epochs") + 1] = "40"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # only a bound for failure; loaded machines are slow
    while not (out / "checkpoints" / "last.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the deadline"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    ck = load_checkpoint(out / "checkpoints" / "last.safetensors")
    done_epochs = int(ck["epoch"])
    assert 1 <= done_epochs < 40
    args[args.index("--epochs") + 1] = "40"
    run = subprocess.run([sys.executable, "-m", "core.cli", *args, "--resume"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_epoch"]) == 40
    assert metrics["resumed_from_epoch"] >= done_epochs  # continued, not restarted


def test_canary_calibration_reports_canary_asr_and_ships_no_canary(files, tiny_bert, tmp_path) -> None:
    out = tmp_path / "out"
    assert main(train_args(files, tiny_bert, out, "--set", "canary=true", "--set", "canary_rate=0.1")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["canary_asr"] <= 1
    assert metrics["config"]["fixed_epoch"] == metrics["best_epoch"]
    assert "tokens" not in metrics["canary"] and len(metrics["canary"]["tokens_sha256"]) == 64  # secret kept
    assert not (out / "canary" / "cand0").exists()  # models carrying the planted trigger are removed


@pytest.mark.parametrize("method", ["muscle", "vanilla"])
def test_frequency_analysis_writes_plots_and_per_step_records(files, tiny_bert, tmp_path, method) -> None:
    out = tmp_path / "out"
    assert main(train_args(files, tiny_bert, out, "--method", method, "--set", "frequency_every=2")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "analysis/frequency.json" in metrics["analysis_files"]
    report = json.loads((out / "analysis" / "frequency.json").read_text())
    assert [h["step"] for h in report["history"]] == [2, 4, 6, 8, 10, 12]  # 6 steps/epoch, 2 epochs
    assert set(report["history"][0]["sets"]) == {"clean", "backdoor"}
    assert all((out / name).stat().st_size > 1000 for name in metrics["analysis_files"] if name.endswith(".png"))


def test_baseline_subcommand_forwards_to_the_baseline_runner(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["baseline", "detect", "--defense", "strip"])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert "muscle baseline detect" in err and "--model" in err


def test_settings_lists_every_field_with_both_profiles_and_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    from core.config import TrainConfig

    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, info in TrainConfig.model_fields.items():
        assert info.description, f"{name} has no description"
        head = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        assert "default=" in lines[head] and "reference=" in lines[head]
        assert lines[head + 1].startswith("    ") and info.description.split()[0] in lines[head + 1]
    assert "  default    muscle         lr=0.0005, epochs=10, ga_reference='kept'" in lines


def test_output_into_a_closed_pipe_stops_quietly() -> None:
    # As `muscle settings | head -1`: the reader is gone before the listing (over a pipe buffer) is written.
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "settings"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_default_job_screens_then_trains_on_the_kept_rows(tiny_bert: Path, tmp_path: Path) -> None:
    from tests.test_screen import corpus, plant, rare_word

    train = plant(corpus(2000), 0.05, 1, rare_word)
    rows = [{"text": ex.text, "label": ex.label, "poisoned": int(bool(ex.poisoned))} for ex in train]
    paths = {"train": write_tsv(tmp_path / "train.tsv", rows),
             "aux": write_tsv(tmp_path / "aux.tsv", [{"text": e.text, "label": e.label} for e in corpus(100, seed=9)]),
             "eval": write_tsv(tmp_path / "eval.tsv", [{"text": e.text, "label": e.label} for e in corpus(60, seed=8)])}
    out = tmp_path / "out"
    args = ["train", "--train", str(paths["train"]), "--aux", str(paths["aux"]), "--eval", str(paths["eval"]),
            "--model", str(tiny_bert), "--epochs", "1", "--batch-size", "64", "--max-length", "24",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    screen = metrics["screen"]
    assert metrics["method"] == "vanilla" and screen["rows_in"] == 2000
    assert screen["recall"] == 1.0 and screen["false_removal_rate"] <= 0.01
    assert screen["rows_kept"] == 2000 - screen["rows_removed"]
    assert metrics["data"]["rows"]["train"] == screen["rows_kept"]  # trained on the kept rows only
    assert screen["clusters"] == []  # the learned screen is opt-in
    card = (out / "model" / "README.md").read_text()
    assert f"the screen removed {screen['rows_removed']} of 2000 training rows" in card
    removed = (out / "screen" / "removed.tsv").read_text().splitlines()
    assert len(removed) == screen["rows_removed"] + 1
    assert metrics["selection_rows"] == metrics["data"]["rows"]["select"]

    # screen: false trains on every row
    off = tmp_path / "off"
    assert main([*args[:-2], str(off), "--no-progress", "--set", "screen=false"]) == 0
    metrics_off = json.loads((off / "metrics.json").read_text())
    assert metrics_off["screen"] is None and metrics_off["data"]["rows"]["train"] == 2000
    assert "were not screened" in (off / "model" / "README.md").read_text()


def test_learned_screen_runs_its_bait_when_asked(tiny_bert: Path, tmp_path: Path) -> None:
    from tests.test_screen import corpus

    train = write_tsv(tmp_path / "train.tsv", [{"text": e.text, "label": e.label} for e in corpus(400)])
    aux = write_tsv(tmp_path / "aux.tsv", [{"text": e.text, "label": e.label} for e in corpus(60, seed=9)])
    out = tmp_path / "out"
    assert main(["train", "--train", str(train), "--aux", str(aux), "--model", str(tiny_bert), "--epochs", "1",
                 "--batch-size", "64", "--max-length", "24", "--out", str(out), "--no-progress",
                 "--set", "screen_learned=true", "--set", "screen_clusters=2"]) == 0
    screen = json.loads((out / "metrics.json").read_text())["screen"]
    # two folds x two classes x two clusters, each with its trusted count and test
    assert len(screen["clusters"]) == 8
    assert all(0 <= c["p_value"] <= 1 and c["trusted"] <= c["trusted_of_class"] for c in screen["clusters"])
    assert screen["settings"]["learned"]["clusters"] == 2


def test_every_option_of_every_command_has_help_text() -> None:
    import argparse

    from core.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "muscle")
    assert missing == []


def test_jobs_client_keeps_metadata_and_probe_paths_as_text() -> None:
    from core.cli import build_parser

    args = build_parser().parse_args(["jobs", "create", "--train", "t.tsv", "--aux", "a.tsv", "--metadata",
                                      "run=1", "--probe-file", "p=123", "--set", "epochs=3"])
    assert args.metadata == [("run", "1")]  # metadata values are strings on the server
    assert args.probe_file == [("p", Path("123"))] and args.set == [("epochs", 3)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["jobs", "create", "--train", "t", "--aux", "a", "--probe-file", "p="])
