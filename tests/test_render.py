"""bench/render.py on a tiny synthetic JSONL (exact Markdown), and the grid's planning and resume logic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    # bench/ is a folder of scripts, not a package: load them by path.
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = _load("render")
grid = _load("grid")


def rec(defense: str, attack: str, cacc: float, asr: float, seed: int = 42, status: str = "ok") -> dict:
    return {"cell": f"main/sst2/{attack}/s{seed}/{defense}", "tag": "main", "dataset": "sst2",
            "attack": attack, "defense": defense, "seed": seed, "status": status, "cacc": cacc, "asr": asr}


RECORDS = [
    rec("muscle", "badnets", 0.5, 0.5),  # replaced by the later line for the same cell
    rec("vanilla", "badnets", 0.9127, 0.9463),
    rec("vanilla", "badnets", 0.9227, 0.9263, seed=43),
    rec("vanilla", "addsent", 0.9099, 0.9989),
    rec("muscle", "badnets", 0.8654, 0.1294),
    rec("muscle", "addsent", 0.8677, 0.1897),
    rec("muscle-no-ga", "badnets", 0.8764, 0.4276),
    rec("lora", "badnets", 0.1, 0.0, status="failed"),  # failed cells never count
]

TABLE1 = """\
| Defense | Badnets CACC↑ | Badnets ASR↓ | Addsent CACC↑ | Addsent ASR↓ |
| --- | ---: | ---: | ---: | ---: |
| Vanilla | 91.77±0.71 | 93.63±1.41 | 90.99 | 99.89 |
| MuScleLoRA | 86.54 | **12.94** | 86.77 | **18.97** |
| MuScleLoRA w/o GA | 87.64 | 42.76 | – | – |"""

TABLE3 = """\
| Method | MS | LR | GA | Badnets CACC↑ | Badnets ASR↓ | Addsent CACC↑ | Addsent ASR↓ |
| --- | :-: | :-: | :-: | ---: | ---: | ---: | ---: |
| Vanilla | × | × | × | 91.77±0.71 | 93.63±1.41 | 90.99 | 99.89 |
| MuScleLoRA | ✓ | ✓ | ✓ | 86.54 | **12.94** | 86.77 | **18.97** |
| w/o GA | ✓ | ✓ | × | 87.64 | 42.76 | – | – |"""


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "grid.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n")
    return path


def test_tables_exact_markdown(jsonl: Path) -> None:
    records = render.load_records(jsonl)
    assert len(records) == 6  # latest ok record per cell; the failed one dropped
    assert render.table1(records) == TABLE1
    assert render.table3(records) == TABLE3
    assert render.render_markdown(records) == (
        "## sst2 (main)\n\nCACC and ASR in percent; seeds 42, 43 (mean±sample std).\n\n"
        + TABLE1 + "\n\nAblations (paper Table 3 layout):\n\n" + TABLE3 + "\n")


def test_no_ablation_table_without_ablation_runs() -> None:
    only = [rec("vanilla", "badnets", 0.9, 0.9), rec("lora", "badnets", 0.89, 0.66)]
    assert render.table3(only) is None
    assert render.table1(only).splitlines()[-1] == "| LoRA | 89.00 | **66.00** |"


def test_cli_writes_tables_and_scatter(jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert render.main(["--results", str(jsonl), "--out-dir", str(out)]) == 0
    assert (out / "tables.md").read_text().startswith("## sst2 (main)")
    assert (out / "scatter.png").read_bytes()[:4] == b"\x89PNG"
    assert "MuScleLoRA" in capsys.readouterr().out
    assert render.main(["--results", str(jsonl), "--out-dir", str(out), "--tag", "other"]) == 2


# --- grid -----------------------------------------------------------------------------------------

def _data(tmp_path: Path) -> object:
    return grid.DataPaths(tmp_path / "train.tsv", tmp_path / "aux.tsv", tmp_path / "select.tsv",
                          tmp_path / "test.tsv", ["--probe", "badnets"])


def test_plan_shares_identical_training_runs(tmp_path: Path) -> None:
    opts = grid.Options(profile="reference")
    data, muscle = _data(tmp_path), ["muscle"]
    vanilla = grid.plan_cell("sst2", "badnets", "vanilla", 42, data, opts, tmp_path, muscle)
    onion = grid.plan_cell("sst2", "badnets", "onion", 42, data, opts, tmp_path, muscle)
    strip = grid.plan_cell("sst2", "badnets", "strip", 42, data, opts, tmp_path, muscle)
    bki = grid.plan_cell("sst2", "badnets", "bki", 42, data, opts, tmp_path, muscle)
    # ONION's and BKI's victims are the reference vanilla run (10 epochs, no warm-up): one folder.
    assert onion.steps[0].out_dir == vanilla.steps[0].out_dir == bki.steps[0].out_dir
    assert strip.steps[0].out_dir != vanilla.steps[0].out_dir  # 5 epochs, 3 warm-up
    assert "--epochs" in strip.steps[0].argv and "warmup_ratio=0.6" in strip.steps[0].argv
    assert [s.name for s in bki.steps] == ["victim", "filter", "final"]
    assert bki.steps[2].argv[bki.steps[2].argv.index("--train") + 1].endswith("cells/bki/filtered.tsv")
    assert onion.steps[1].argv[-2:] == ["--lm", "gpt2"]
    assert onion.steps[1].done.endswith("cells/onion/detect.json")  # metrics.json only once all passed
    with pytest.raises(SystemExit):
        grid.plan_cell("sst2", "badnets", "nope", 42, data, opts, tmp_path, muscle)


def test_hiddenkiller_thinning(tmp_path: Path) -> None:
    clean = tmp_path / "clean.tsv"
    released = tmp_path / "hk"
    released.mkdir()
    clean.write_text("text\tlabel\n" + "".join(f"clean {i}\t{i % 2}\n" for i in range(20)))
    (released / "train.tsv").write_text("text\tlabel\tpoisoned\torig_label\n" + "".join(
        f"para {i}\t1\t1\t{i % 2}\n" if i < 4 else f"clean {i}\t{i % 2}\t0\t{i % 2}\n" for i in range(20)))
    out = tmp_path / "train.tsv"
    assert grid.build_hiddenkiller_train(released, clean, out, 0.1, 42, None) == {"rows": 20, "poisoned": 2}
    lines = out.read_text().splitlines()[1:]
    assert len(lines) == 20 and sum(line.startswith("para") for line in lines) == 2
    assert all(line.endswith("\t0\t" + line.split("\t")[1]) for line in lines if line.startswith("clean"))
    with pytest.raises(SystemExit):  # 50% asks for more paraphrased rows than were released
        grid.build_hiddenkiller_train(released, clean, tmp_path / "x.tsv", 0.5, 42, None)


def test_aux_size_splits_dev_and_names_the_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sst2").mkdir(parents=True)
    (root / "sst2-hiddenkiller").mkdir()
    (root / "sst2" / "dev.tsv").write_text("text\tlabel\n" + "".join(f"dev {i}\t{i % 2}\n" for i in range(12)))
    for name in ("train.tsv", "test.tsv"):
        (root / "sst2" / name).write_text("text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(10)))
    (root / "sst2-hiddenkiller" / "train.tsv").write_text("text\tlabel\tpoisoned\torig_label\n" + "".join(
        f"para {i}\t1\t1\t{i % 2}\n" if i < 2 else f"row {i}\t{i % 2}\t0\t{i % 2}\n" for i in range(10)))
    (root / "sst2-hiddenkiller" / "test.tsv").write_text("text\tlabel\tpoisoned\torig_label\n"
                                                         "para t\t1\t1\t0\n")
    runs = tmp_path / "runs"
    default = grid.prepare_data("sst2", "hiddenkiller", 42, grid.Options(aux_size=4), root, runs, [], False)
    larger = grid.prepare_data("sst2", "hiddenkiller", 42, grid.Options(aux_size=8), root, runs, [], False)
    assert (default.aux.name, default.select.name) == ("aux4-s42.tsv", "select-aux4-s42.tsv")
    assert (larger.aux.name, larger.select.name) == ("aux8-s42.tsv", "select-aux8-s42.tsv")
    assert grid.prepare_data("sst2", "hiddenkiller", 42, grid.Options(), root, runs, [], True
                             ).select.name == "select-s42.tsv"  # the default 96 keeps its old name
    for paths, size in ((default, 4), (larger, 8)):
        aux = paths.aux.read_text().splitlines()[1:]
        select = paths.select.read_text().splitlines()[1:]
        assert len(aux) == size and len(select) == 12 - size and not set(aux) & set(select)


def test_schedule_records_and_resumes(tmp_path: Path) -> None:
    cell_dir = tmp_path / "cells" / "vanilla"
    train_dir = tmp_path / "train" / "vanilla-x"
    script = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, "
              "exist_ok=True); (out / 'metrics.json').write_text(json.dumps({'cacc': 0.9, "
              "'asr': {'badnets': 0.25}, 'config': {'lr': 2e-05}, 'versions': {'muscle': '0'}}))")
    step = grid.Step("train", [sys.executable, "-c", script, str(train_dir)], str(train_dir / "metrics.json"))
    cell = grid.Cell("main", "sst2", "badnets", "vanilla", 42, "method", str(cell_dir), [step],
                     train_dir=str(train_dir))
    results = tmp_path / "grid.jsonl"
    assert grid.schedule([cell], grid.Options(), results, parallel=1, poll=0.1) == 0
    first = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(first) == 1 and first[0]["status"] == "ok"
    assert first[0]["cacc"] == 0.9 and first[0]["asr"] == 0.25 and first[0]["config"] == {"lr": 2e-05}
    assert first[0]["machine"]["cpus"] and first[0]["wall_seconds"] > 0
    assert first[0]["train_dir"] == str(train_dir)  # where frequency_figures.py finds the analysis
    grid.schedule([cell], grid.Options(), results, parallel=1, poll=0.1)  # done: skipped, not re-recorded
    assert len(results.read_text().splitlines()) == 1

    failing = grid.Step("train", [sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path / "n"))
    broken = grid.Cell("main", "sst2", "addsent", "vanilla", 42, "method", str(tmp_path / "c2"), [failing],
                       train_dir=str(tmp_path / "n"))
    assert grid.schedule([broken], grid.Options(), results, parallel=1, poll=0.1) == 1
    last = json.loads(results.read_text().splitlines()[-1])
    assert last["status"] == "failed" and last["returncode"] == 3


efficacy = _load("efficacy_table")
screen = _load("screen_table")


def test_efficacy_correlations_hand_checked() -> None:
    assert efficacy.ranks([0.3, 0.1, 0.3, 0.2]) == [2.5, 0.0, 2.5, 1.0]  # ties share the mean rank
    line = efficacy.correlations([(0.0, 0.1), (0.5, 0.6), (1.0, 0.9)])
    assert line.startswith("3 pairs") and "Spearman 1.00" in line
    assert "Pearson 0.99" in line  # x (0, .5, 1), y (.1, .6, .9): r = 0.993
    assert efficacy.correlations([(0.1, 0.2)]) == "1 pairs: too few"
    assert "constant" in efficacy.correlations([(0.1, 0.2), (0.1, 0.3), (0.1, 0.4)])


def test_efficacy_table_cells_and_canary_tracking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    canary = {"candidates": [{"epoch": 2, "canary_asr": 0.1, "probe_asr": {"badnets": 0.3},
                              "per_epoch": [{"canary_asr": 0.05, "probe_asr": {"badnets": 0.2}},
                                            {"canary_asr": 0.1, "probe_asr": {"badnets": 0.3}},
                                            {"canary_asr": 0.9, "probe_asr": {"badnets": 1.0}}]}]}
    row = {"status": "ok", "tag": "efficacy-default", "cell": "efficacy-default/sst2/badnets/s42/muscle",
           "defense": "muscle", "attack": "badnets", "cacc": 0.8,
           "asr": 0.25, "wall_seconds": 600, "metrics": {"asr_floor": 0.2, "canary_asr": 0.1, "canary": canary}}
    path = tmp_path / "grid.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert efficacy.main(["--results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| muscle | default | 80.0 / 25.0 (20.0) · 10.0 | not run | not run | 10 min |" in out
    assert "every epoch of every canary run: 3 pairs" in out and "Spearman 1.00" in out
    assert "muscle/default/badnets: epoch 2, canary 10.0, real 30.0" in out


def test_efficacy_table_reads_other_tags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def row(tag: str, defense: str, cacc: float) -> dict[str, object]:
        return {"status": "ok", "tag": tag, "cell": f"{tag}/sst2/addsent/s42/{defense}", "defense": defense,
                "attack": "addsent", "cacc": cacc, "asr": 0.5, "wall_seconds": 120,
                "metrics": {"asr_floor": 0.1}}
    path = tmp_path / "grid.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        row("full-x", "muscle", 0.7), row("fid", "vanilla", 0.9), row("screen-vanilla", "vanilla", 0.1)]))
    assert efficacy.main(["--results", str(path), "--tag", "full-x=default", "--tag", "fid=reference"]) == 0
    out = capsys.readouterr().out
    assert "| muscle | default | not run | 70.0 / 50.0 (10.0) · - | not run | 2 min |" in out
    assert "| vanilla | reference | not run | 90.0 / 50.0 (10.0) · - | not run | 2 min |" in out
    assert "†" not in out  # no screening fallback for other tags
    with pytest.raises(SystemExit):
        efficacy.main(["--results", str(path), "--tag", "full-x=tuned"])


def test_screen_table_row() -> None:
    rec_ = {"tag": "screen-x", "defense": "muscle", "attack": "badnets", "cacc": 0.7, "asr": 0.35,
            "wall_seconds": 120, "options": {"lr": 5e-4, "sets": ["ga_gate_loss=null"]},
            "metrics": {"per_epoch": [{"select_accuracy": 0.68, "monitors": {"badnets": 0.41, "asr_floor": 0.34},
                                       "ga": {"raw_share": 0.25}}]}}
    assert screen.row(rec_) == ("| screen-x | muscle | badnets | lr 0.0005 ga_gate_loss=null | 70.0 | 35.0 | "
                                "68/41 (floor 34)/25 | 2.0 min |")


# --- epoch records of unfinished runs ----------------------------------------------------------------

epoch_records = _load("epoch_records")


def test_epoch_records_from_a_real_checkpoint_and_the_grid(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from core.config import resolve_config
    from core.defenses.methods import apply_defense
    from core.models.backbones import load_backbone
    from core.training import loop
    from tests.test_training_loop import AUX, PROBE, SELECT, TRAIN
    from tests.tiny_models import TinyLabels

    cfg = resolve_config("default", {"method": "muscle"}).model_copy(update={
        "epochs": 3, "fixed_epoch": 2, "batch_size": 8, "aux_batch_size": 4,
        "eval_batch_size": 4, "max_length": 32, "device": "cpu"})
    model, tok = load_backbone(str(tiny("bert")), TinyLabels(2), seed=42)
    model = apply_defense(model, cfg, "bert")
    loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "run",
               monitors={"badnets": PROBE, "asr_floor": PROBE[:3]})  # stops after epoch 2 of 3

    partial = tmp_path / "partial.jsonl"
    assert epoch_records.main(["record", str(tmp_path / "run"), "--tag", "t", "--results", str(partial)]) == 0
    rec = epoch_records.load_partial(partial)["t"]
    assert (rec["epochs_done"], rec["epochs_planned"], len(rec["per_epoch"])) == (2, 3, 2)
    assert rec["config"]["lr"] == 5e-4 and rec["per_epoch"][1]["ga"]["raw_tensors_per_step"] == 0

    finished = {"cell": "g/sst2/badnets/s42/muscle", "tag": "g", "status": "ok", "metrics": {"per_epoch": [
        {"epoch": 1, "select_accuracy": 0.75, "monitors": {"asr_floor": 0.25, "badnets": 0.5},
         "ga": {"ref_loss_mean": 0.084}, "seconds": 300}]}}
    grid_file = tmp_path / "grid.jsonl"
    grid_file.write_text(json.dumps(finished) + "\n")
    histories = epoch_records.epoch_histories(["t", "g"], partial, grid_file)
    text = epoch_records.table(histories, ["g", "t"], epochs=1)
    lines = text.splitlines()
    assert lines[2] == "| g | 1 | 75.0 | 50.0 | 25.0 | +25.0 | 0.084 | - | 5 |"
    assert len(lines) == 4 and lines[3].startswith("| t | 1 |")
    # a grid tag that ran several attacks: one attack by TAG/ATTACK, the other attack's run not mixed in
    other = {**finished, "cell": "g/sst2/addsent/s42/muscle", "attack": "addsent",
             "metrics": {"per_epoch": [{**finished["metrics"]["per_epoch"][0], "select_accuracy": 0.6}]}}
    grid_file.write_text(json.dumps({**finished, "attack": "badnets"}) + "\n" + json.dumps(other) + "\n")
    one = epoch_records.epoch_histories(["g/badnets"], partial, grid_file)
    assert list(one) == ["g/badnets"] and one["g/badnets"][0]["select_accuracy"] == 0.75


# --- the end-to-end screen table ----------------------------------------------------------------------


def test_e2e_table_reads_each_job_against_its_backdoor_free_model() -> None:
    e2e = _load("e2e")

    def rec(attack: str, rate: float, arm: str, cacc: float, asr: float, screen: dict | None = None) -> dict:
        return {"run": f"v1-{attack}-{rate:g}-{arm}", "tag": "v1", "attack": attack, "rate": rate, "arm": arm,
                "cacc": cacc, "asr": dict.fromkeys(set(e2e.PROBE.values()), asr), "screen": screen,
                "wall_seconds": 600.0}

    records = {r["run"]: r for r in [
        rec("badnets", 0.1, "free", 0.86, 0.20),
        rec("badnets", 0.1, "default", 0.85, 0.22, {"recall": 1.0, "false_removal_rate": 0.0}),
        rec("addsent", 0.01, "default", 0.87, 0.18, {"recall": 0.5, "false_removal_rate": 0.001}),
    ]}
    lines = e2e.table(records).splitlines()
    assert lines[2] == "| badnets | 0.1 | 86.0 / 20.0 | 85.0 / 22.0 | -1.0 | +2.0 | 100.0 / 0.0 | 10 |"
    # no backdoor-free run of its own: read against badnets' at 10%, and said so
    assert lines[3] == "| addsent | 0.01 | 86.0 / 20.0 (proxy) | 87.0 / 18.0 | +1.0 | -2.0 | 50.0 / 0.1 | 10 |"


def test_e2e_table_takes_a_base_tags_exact_job_as_the_backdoor_free_model() -> None:
    e2e = _load("e2e")

    def rec(tag: str, attack: str, arm: str, cacc: float, screen: dict) -> dict:
        return {"run": f"{tag}-{attack}-0.01-{arm}", "tag": tag, "attack": attack, "rate": 0.01, "arm": arm,
                "cacc": cacc, "asr": dict.fromkeys(set(e2e.PROBE.values()), 0.1), "screen": screen,
                "wall_seconds": 600.0}

    records = {r["run"]: r for r in [
        rec("new", "badnets", "default", 0.87, {"recall": 1.0, "false_removal_rate": 0.005}),
        rec("old", "badnets", "default", 0.88, {"recall": 1.0, "false_removal_rate": 0.0}),
        rec("old", "addsent", "default", 0.86, {"recall": 0.9, "false_removal_rate": 0.0}),
        rec("older", "addsent", "default", 0.85, {"recall": 1.0, "false_removal_rate": 0.0}),
    ]}
    lines = e2e.table(records, "new", "old,older").splitlines()
    # the new job against the old job that kept exactly the clean rows
    assert lines[2] == "| badnets | 0.01 | 88.0 / 10.0 | 87.0 / 10.0 | -1.0 | +0.0 | 100.0 / 0.5 | 10 |"
    # a cell only the bases ran: the first base's job, marked with its tag, against the later base's exact job
    assert lines[3] == "| addsent (old) | 0.01 | 85.0 / 10.0 | 86.0 / 10.0 | +1.0 | +0.0 | 90.0 / 0.0 | 10 |"


def test_the_model_card_names_the_packaged_base_model_and_its_license() -> None:
    from core.model_card import base_model, card_metadata

    assert base_model("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model("bert-base-uncased") == "bert-base-uncased" and base_model("/models/x") is None
    metrics = {"config": {"model": "minilm"}, "method": "vanilla", "cacc": 0.87, "asr": {"badnets": 0.14},
               "cacc_source": "eval file test.tsv"}
    meta = card_metadata(metrics)
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in meta and "license: apache-2.0" in meta
    assert "name: ASR (badnets)" in meta and "value: 0.87" in meta
