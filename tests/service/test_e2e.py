"""End to end through real processes: train a tiny poisoned job to success and check the model,
cancel mid-run, kill -9 the worker mid-run and see the job resume from its checkpoint."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.helpers import files
from tests.service.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.service]


def config(tiny_model: Path, **extra: Any) -> str:
    return json.dumps({"model": str(tiny_model), "epochs": 2, "batch_size": 8, "max_length": 32,
                       "lr": 5e-4, "seed": 3, "device": "cpu", "metadata": {"test": "e2e"}, **extra})


def post(stack: Stack, dataset: dict[str, Path], cfg: str, roles: tuple[str, ...] = ("train", "aux", "eval",
                                                                                    "badnets")) -> str:
    with stack.client() as c:
        r = c.post("/jobs", files=files(dataset, *roles), data={"config": cfg})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def predictions(model_dir: Path, texts: list[str], max_length: int) -> list[str]:
    """Label names predicted by the downloaded model, with plain transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ids = model(**enc).logits.argmax(-1).tolist()
    return [model.config.id2label[i] for i in ids]


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *rows = path.read_text().splitlines()
    return [dict(zip(header.split("\t"), r.split("\t"), strict=True)) for r in rows]


def test_job_succeeds_and_the_model_reproduces_the_reported_cacc(stack: Stack, dataset: dict[str, Path],
                                                                  tiny_model: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    job_id = post(stack, dataset, config(tiny_model, method="muscle", frequency_every=4))
    job = stack.wait(job_id)
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", (job["error"], stack.log())
    print(f"\n[figure] tiny job end to end: {elapsed:.1f} s "
          f"(epochs: {[round(e['seconds'], 2) for e in job['metrics']['per_epoch']]} s)")

    assert job["started_at"] and job["finished_at"] and job["finished_at"] >= job["started_at"]
    assert job["progress"]["epoch"] == 2 and job["progress"]["step"] == job["progress"]["total_steps"]
    metrics = job["metrics"]
    assert len(metrics["per_epoch"]) == 2 and set(metrics["asr"]) == {"badnets"}
    types = [e["type"] for e in stack.events(job_id)]
    for kind in ("job.started", "phase", "epoch", "artifact.uploaded", "job.succeeded"):
        assert kind in types, kind
    assert sum(t == "epoch" for t in types) == 2

    with stack.client() as c:
        r = c.get(f"/jobs/{job_id}/model")
        assert r.status_code == 200
        digest = hashlib.sha256(r.content).hexdigest()
        assert digest == r.headers["X-Checksum-SHA256"] == job["artifacts"]["model"]["sha256"]
        assert int(r.headers["Content-Length"]) == len(r.content) == job["artifacts"]["model"]["bytes"]
        assert r.headers["Digest"].startswith("sha-256=")
        report = c.get(f"/jobs/{job_id}/report").json()
        adapter = c.get(f"/jobs/{job_id}/adapter")
        assert adapter.status_code == 200
        assert hashlib.sha256(adapter.content).hexdigest() == job["artifacts"]["adapter"]["sha256"]
        screen = c.get(f"/jobs/{job_id}/screen")
        assert screen.status_code == 200 and screen.headers["content-type"].startswith("text/tab-separated")
        assert hashlib.sha256(screen.content).hexdigest() == job["artifacts"]["screen"]["sha256"]
        removed = screen.text.splitlines()
        assert removed[0].split("\t") == ["row", "line", "rule", "feature", "score", "text", "label",
                                         "relabelled"]
        assert len(removed) - 1 == metrics["screen"]["rows_removed"]
        analysis = c.get(f"/jobs/{job_id}/analysis")
        assert analysis.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(analysis.content)) as tar:
            assert "analysis/frequency.json" in tar.getnames()
    assert report["cacc"] == metrics["cacc"] and report["asr"] == metrics["asr"]

    # The worker's own exporter: step time, throughput, queue wait, nothing left running. The job reads
    # `succeeded` as soon as the worker commits it, a moment before the task returns and the worker counts
    # it as ended, so the gauge is read until it settles.
    def scrape() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{stack.env['MUSCLE_WORKER_METRICS_PORT']}/metrics").text
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line and not line.startswith("#")}

    deadline = time.monotonic() + 30
    while (values := scrape())["muscle_worker_jobs_running"] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert values["muscle_worker_step_seconds_count"] >= job["progress"]["total_steps"] - 1
    assert values["muscle_worker_samples_per_second"] > 0 and values["muscle_worker_jobs_running"] == 0
    assert values["muscle_worker_queue_wait_seconds_count"] >= 1
    assert values['muscle_worker_jobs_finished_total{outcome="succeeded"}'] >= 1

    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    model_dir = tmp_path / "model"
    eval_rows = read_tsv(dataset["eval"])
    preds = predictions(model_dir, [row["text"] for row in eval_rows], max_length=32)
    cacc = sum(p == row["label"] for p, row in zip(preds, eval_rows, strict=True)) / len(eval_rows)
    assert cacc == metrics["cacc"]  # exactly what the job reported

    probe = [row for row in read_tsv(dataset["badnets"]) if row["orig_label"] != "1"]
    preds = predictions(model_dir, [row["text"] for row in probe], max_length=32)
    assert sum(p == "1" for p in preds) / len(probe) == metrics["asr"]["badnets"]


def test_event_stream_ends_when_the_job_is_terminal(stack: Stack, dataset: dict[str, Path],
                                                    tiny_model: Path) -> None:
    job_id = post(stack, dataset, config(tiny_model, epochs=1), ("train", "aux"))
    seen: list[dict[str, Any]] = []
    with stack.client() as c, c.stream("GET", f"/jobs/{job_id}/events", params={"stream": "true"},
                                        timeout=httpx.Timeout(120)) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                if line == "data: [DONE]":
                    break
                seen.append(json.loads(line[6:]))
    assert seen[0]["type"] == "job.created" and seen[-1]["type"] in ("job.succeeded", "job.failed")
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    assert stack.wait(job_id, timeout=5)["status"] == "succeeded"


def test_cancel_mid_run_and_cancel_while_queued(stack: Stack, dataset: dict[str, Path],
                                                tiny_model: Path) -> None:
    running = post(stack, dataset, config(tiny_model, epochs=40), ("train", "aux"))
    stack.wait_event(running, lambda e: e["type"] in ("metrics", "epoch"))  # training is under way
    queued = post(stack, dataset, config(tiny_model, epochs=1), ("train", "aux"))  # worker is busy

    with stack.client() as c:
        r = c.post(f"/jobs/{queued}/cancel")
        assert r.json()["status"] == "cancelled"  # never started: ends at once
        t0 = time.monotonic()
        r = c.post(f"/jobs/{running}/cancel")
        assert r.json()["status"] in ("cancelling", "cancelled")
    job = stack.wait(running, timeout=30)
    print(f"\n[figure] cancel took effect in {time.monotonic() - t0:.2f} s")
    assert job["status"] == "cancelled" and job["finished_at"]
    assert job["progress"]["epoch"] < 40
    event = [e for e in stack.events(running) if e["type"] == "job.cancelled"][-1]
    assert event["data"]["step"] is not None

    with stack.client() as c:
        assert c.get(f"/jobs/{running}/model").status_code == 404
        assert c.delete(f"/jobs/{running}").status_code == 200
        assert c.get(f"/jobs/{running}").status_code == 404
    # The queued job's message is dropped by the worker (lease refused), the job stays cancelled.
    time.sleep(1.0)
    assert stack.wait(queued, timeout=5)["status"] == "cancelled"


def test_kill_9_worker_mid_run_then_the_job_resumes_from_its_checkpoint(
        stack: Stack, dataset: dict[str, Path], tiny_model: Path) -> None:
    epochs = 12
    job_id = post(stack, dataset, config(tiny_model, epochs=epochs), ("train", "aux", "eval"))
    stack.wait_event(job_id, lambda e: e["type"] == "epoch" and e["data"]["epoch"] >= 2, timeout=90)
    stack.kill_worker()  # SIGKILL: no cleanup, the lease is left to expire
    killed = time.monotonic()
    with stack.client() as c:
        assert c.get(f"/jobs/{job_id}").json()["status"] in ("running", "evaluating")
    stack.start_worker()

    resumed = stack.wait_event(job_id, lambda e: e["type"] == "job.resumed", timeout=60)
    resume_s = time.monotonic() - killed
    job = stack.wait(job_id)
    done_s = time.monotonic() - killed
    print(f"\n[figure] after kill -9: resumed in {resume_s:.1f} s, succeeded {done_s:.1f} s after the kill")
    assert job["status"] == "succeeded", (job["error"], stack.log())
    assert job["attempts"] == 2
    assert resumed["data"]["checkpoints"], resumed
    events = stack.events(job_id)
    assert "job.requeued" in [e["type"] for e in events]
    # Finished epochs were not trained again: the epochs continue after the last one recorded.
    before = [e["data"]["epoch"] for e in events if e["id"] < resumed["id"] and e["type"] == "epoch"]
    after = [e["data"]["epoch"] for e in events if e["id"] > resumed["id"] and e["type"] == "epoch"]
    assert before and after and after[0] == before[-1] + 1 == resumed["data"]["completed_epochs"] + 1
    assert [row["epoch"] for row in job["metrics"]["per_epoch"]] == list(range(1, epochs + 1))


def muscle(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSCLE_URL": stack.url, "MUSCLE_API_KEY": stack.key}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_jobs_client_uploads_creates_by_json_follows_and_downloads(
        stack: Stack, dataset: dict[str, Path], tiny_model: Path, tmp_path: Path) -> None:
    """`muscle jobs` end to end over HTTP: POST /files, a JSON POST /jobs, the SSE stream, checked downloads."""
    test_file = tmp_path / "test.tsv"  # a name other than the role: metrics must say the user's name
    test_file.write_bytes(dataset["eval"].read_bytes())
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"model: {tiny_model}\nepochs: 2\nbatch_size: 8\nmax_length: 32\nlr: 0.0005\n")
    made = muscle(stack, "jobs", "create", "--train", str(dataset["train"]), "--aux", str(dataset["aux"]),
                  "--eval", str(test_file), "--probe-file", f"badnets={dataset['badnets']}",
                  "--config", str(settings), "--set", "seed=3", "--metadata", "team=cli", "--follow")
    assert made.returncode == 0, made.stderr + stack.log()
    assert "uploaded train.tsv as file_" in made.stderr and "succeeded" in made.stderr
    assert "epoch 1/2 done" in made.stderr and "lr=0.00025," in made.stderr  # halfway down the decay, all digits
    job_id = made.stderr.split("created ")[1].split()[0]

    with stack.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
        assert all(f["file_id"] for f in job["files"].values())
        assert {f["purpose"] for f in c.get("/files").json()["data"]} == {"train", "aux", "eval", "probe"}
    assert job["status"] == "succeeded" and job["metadata"] == {"team": "cli"} and job["config"]["seed"] == 3
    assert job["metrics"]["cacc_source"] == "eval file test.tsv"

    listed = muscle(stack, "jobs", "list")
    assert listed.returncode == 0 and job_id in listed.stdout and "succeeded" in listed.stdout
    got = muscle(stack, "jobs", "download", job_id, "--model", str(tmp_path / "m"), "--report", str(tmp_path / "r"))
    assert got.returncode == 0, got.stderr
    report = json.loads((tmp_path / "r" / f"{job_id}-metrics.json").read_text())
    eval_rows = read_tsv(test_file)
    preds = predictions(tmp_path / "m", [row["text"] for row in eval_rows], max_length=32)
    cacc = sum(p == row["label"] for p, row in zip(preds, eval_rows, strict=True)) / len(eval_rows)
    assert cacc == report["cacc"] == job["metrics"]["cacc"]
    from huggingface_hub import ModelCard  # the archive's card, as the Hub would read it

    card = ModelCard.load(tmp_path / "m" / "README.md").data
    assert {r.metric_name: r.metric_value for r in card.eval_results}["CACC"] == report["cacc"]
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["cacc"] == report["cacc"]

    logs = stack.log("api.log", tail=10**6) + stack.log("worker.log", tail=10**6)
    assert stack.key not in logs and stack.key not in json.dumps(stack.events(job_id))  # no key in logs or events
    missing = muscle(stack, "jobs", "download", job_id, "--model", str(tmp_path / "m2"),
                     "--url", "http://127.0.0.1:9")  # nothing listens there
    assert missing.returncode == 1 and "cannot reach the service" in missing.stderr


def test_files_by_id_and_a_json_job_over_plain_http(stack: Stack, dataset: dict[str, Path], tiny_model: Path,
                                                    tmp_path: Path) -> None:
    """The same flow as a client in any language: POST /files, a JSON POST /jobs, the SSE stream, a download."""
    with stack.client() as c:
        ids = {}
        for role, purpose in (("train", "train"), ("aux", "aux"), ("eval", "eval")):
            r = c.post("/files", files={"file": (dataset[role].name, dataset[role].read_bytes())},
                       data={"purpose": purpose})
            assert r.status_code in (200, 201), r.text  # 200: the shared stack already holds this content
            ids[role] = r.json()["id"]
        r = c.post("/jobs", json={"training_file": ids["train"], "aux_file": ids["aux"], "eval_file": ids["eval"],
                                  "model": str(tiny_model), "epochs": 1, "batch_size": 8, "max_length": 32,
                                  "seed": 3, "device": "cpu"})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        kinds = []
        with c.stream("GET", f"/jobs/{job_id}/events", params={"stream": "true"}, timeout=httpx.Timeout(300)) as s:
            for line in s.iter_lines():
                if line == "data: [DONE]":
                    break
                if line.startswith("data: "):
                    kinds.append(json.loads(line[6:])["type"])
        job = c.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and kinds[-1] == "job.succeeded", (job["error"], stack.log())
        model = c.get(f"/jobs/{job_id}/model")
    assert hashlib.sha256(model.content).hexdigest() == job["artifacts"]["model"]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(model.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    eval_rows = read_tsv(dataset["eval"])
    preds = predictions(tmp_path / "model", [row["text"] for row in eval_rows], max_length=32)
    assert sum(p == row["label"] for p, row in zip(preds, eval_rows, strict=True)) / len(eval_rows) \
        == job["metrics"]["cacc"]


def test_a_lost_worker_host_the_job_finishes_on_another_from_the_stored_checkpoint(
        stack: Stack, dataset: dict[str, Path], tiny_model: Path, tmp_path: Path) -> None:
    """Checkpoints live in the artifact store: a worker with its own, empty work folder resumes the job
    a killed worker left mid-epoch, and the result is the uninterrupted run's."""
    cfg = config(tiny_model, epochs=6)
    roles = ("train", "aux", "eval")
    straight = stack.wait(post(stack, dataset, cfg, roles))
    assert straight["status"] == "succeeded", (straight["error"], stack.log())

    job_id = post(stack, dataset, cfg, roles)
    stack.wait_event(job_id, lambda e: e["type"] == "epoch" and e["data"]["epoch"] >= 2, timeout=90)
    stack.kill_worker()  # the host is gone, and its disk with it
    stack.start_worker(work_dir=tmp_path / "other-host")
    try:
        resumed = stack.wait_event(job_id, lambda e: e["type"] == "job.resumed", timeout=90)
        job = stack.wait(job_id)
    finally:
        stack.kill_worker()
        stack.start_worker()  # the shared stack's own worker for the tests after this one
    assert job["status"] == "succeeded", (job["error"], stack.log())
    assert resumed["data"]["from_store"] and resumed["data"]["completed_epochs"] >= 2
    assert job["metrics"]["cacc"] == straight["metrics"]["cacc"]
    losses = [[round(r["train_loss"], 6) for r in j["metrics"]["per_epoch"]] for j in (job, straight)]
    assert losses[0] == losses[1]
    assert not list((tmp_path / "other-host").glob(f"{job_id}/*"))  # its work folder was cleaned up


def test_a_key_runs_at_most_its_share_of_jobs_at_once(stack: Stack, dataset: dict[str, Path], tiny_model: Path,
                                                      tmp_path: Path) -> None:
    """Two idle workers, MUSCLE_MAX_RUNNING_JOBS_PER_KEY=1: the key's second job waits for its first."""
    limit = {"MUSCLE_MAX_RUNNING_JOBS_PER_KEY": "1", "MUSCLE_DEFER_SECONDS": "1"}
    stack.kill_worker()
    stack.start_worker(**limit)
    first_worker = stack.worker
    stack.start_worker(work_dir=tmp_path / "second", **limit)
    roles = ("train", "aux", "eval")
    try:
        long_job = post(stack, dataset, config(tiny_model, epochs=8), roles)
        stack.wait_event(long_job, lambda e: e["type"] == "epoch")
        short_job = post(stack, dataset, config(tiny_model, epochs=1), roles)
        deferred = stack.wait_event(short_job, lambda e: e["type"] == "job.deferred", timeout=60)
        done_long, done_short = stack.wait(long_job), stack.wait(short_job)
    finally:
        assert first_worker is not None
        first_worker.kill()
        first_worker.wait(30)
        stack.kill_worker()
        stack.start_worker()
    assert done_long["status"] == done_short["status"] == "succeeded", stack.log()
    assert "limit is 1" in deferred["message"]
    assert done_short["started_at"] >= done_long["finished_at"] - 1  # whole seconds
    assert [e["type"] for e in stack.events(short_job)].count("job.deferred") == 1  # said once, not per retry
