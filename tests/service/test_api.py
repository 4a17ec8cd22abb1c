"""The HTTP API in-process (TestClient) on SQLite, with the real Redis broker: auth, ownership,
idempotency, paging, validation errors, limits, cancel/delete of queued jobs, events, health."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.service.artifacts import LocalArtifactStore
from tests.service.conftest import Api, free_port
from tests.service.helpers import files, get_job

pytestmark = pytest.mark.service

def test_keys_are_required_and_open_endpoints_stay_open(api: Api) -> None:
    assert api.client.get("/jobs").status_code == 401
    bad = api.client.get("/jobs", headers={"Authorization": "Bearer msk_wrong"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
    assert bad.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert api.client.get(path).status_code == 200, path


def test_create_get_and_list(api: Api, dataset: dict[str, Path], redis_url: str, queue_name: str) -> None:
    r = api.create(dataset)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["id"].startswith("job_") and job["object"] == "job" and job["status"] == "queued"
    assert job["files"]["train"]["filename"] == "train.tsv" and job["files"]["train"]["rows"] == 160
    assert set(job["files"]) == {"train", "aux", "eval", "probe:badnets"}
    assert job["config"]["epochs"] == 1 and job["metadata"] == {"team": "a"}
    assert job["validation"]["rows"]["probe:badnets"] > 0
    assert r.headers["Location"] == f"/jobs/{job['id']}"
    assert api.client.get(f"/jobs/{job['id']}", headers=api.h()).json()["id"] == job["id"]
    assert get_job(api.settings.database_url, job["id"]).dispatched_at is not None

    import redis  # the task message is on the broker: only the job id travels
    raw = redis.Redis.from_url(redis_url).lrange(queue_name, 0, -1)
    assert any(job["id"] in m.decode() for m in raw)

    events = api.client.get(f"/jobs/{job['id']}/events", headers=api.h()).json()
    assert [e["type"] for e in events["data"]] == ["job.created", "job.validated", "job.queued"]


def test_paging_newest_first_with_cursor_and_status_filter(api: Api, dataset: dict[str, Path]) -> None:
    ids = [api.create(dataset, ("train", "aux")).json()["id"] for _ in range(5)]
    page1 = api.client.get("/jobs?limit=2", headers=api.h()).json()
    assert [j["id"] for j in page1["data"]] == ids[::-1][:2] and page1["has_more"]
    page2 = api.client.get(f"/jobs?limit=2&after={page1['last_id']}", headers=api.h()).json()
    page3 = api.client.get(f"/jobs?limit=2&after={page2['last_id']}", headers=api.h()).json()
    assert [j["id"] for j in page2["data"] + page3["data"]] == ids[::-1][2:]
    assert not page3["has_more"]
    api.client.post(f"/jobs/{ids[0]}/cancel", headers=api.h())
    cancelled = api.client.get("/jobs?status=cancelled", headers=api.h()).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert api.client.get("/jobs?limit=0", headers=api.h()).status_code == 422


def test_jobs_are_visible_only_to_their_key(api: Api, dataset: dict[str, Path]) -> None:
    job_id = api.create(dataset, ("train", "aux")).json()["id"]
    other = api.h(api.other)
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/events"),
                         ("POST", f"/jobs/{job_id}/cancel"), ("DELETE", f"/jobs/{job_id}"),
                         ("GET", f"/jobs/{job_id}/model"), ("GET", f"/jobs/{job_id}/report")):
        r = api.client.request(method, path, headers=other)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path)
    assert api.client.get("/jobs", headers=other).json()["data"] == []
    assert api.client.get(f"/jobs/{job_id}", headers=api.h()).json()["status"] == "queued"


def test_bad_file_is_422_with_file_line_and_field(api: Api, dataset: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "my-train.tsv"
    bad.write_text("text\tlabel\nfine movie\t1\n\t0\n")
    r = api.create({**dataset, "train": bad}, ("train", "aux"))
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_file" and err["file"] == "my-train.tsv" and err["line"] == 3
    assert err["field"] == "text" and err["param"] == "train"
    assert "tmp" not in err["message"] and "my-train.tsv" in err["message"]  # no server paths leak
    assert api.client.get("/jobs", headers=api.h()).json()["data"] == []  # nothing was queued


@pytest.mark.parametrize("config, param", [
    ("{not json", "config"),
    ('["a list"]', "config"),
    ('{"epochs": 0}', "config.epochs"),
    ('{"no_such_setting": 1}', "config.no_such_setting"),
    ('{"method": "nope"}', "config.method"),
    ('{"metadata": {"k": 1}}', "config.metadata"),
    ('{"probes": ["bogus-trigger"]}', "config"),
    ('{"target_label": "7"}', "config"),
    ('{"model": "no-such-org/no-such-model"}', "config.model"),
    ('{"model": "/no/such/folder"}', "config.model"),
])
def test_bad_config_is_422(api: Api, dataset: dict[str, Path], config: str, param: str) -> None:
    r = api.create(dataset, ("train", "aux"), config=config)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["code"] == "invalid_config"


def test_missing_file_and_wrong_type(api: Api, dataset: dict[str, Path], tmp_path: Path) -> None:
    r = api.client.post("/jobs", headers=api.h(), files=files(dataset, "aux"), data={"config": "{}"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "train"
    exe = tmp_path / "train.exe"
    exe.write_bytes(b"MZ")
    r = api.create({**dataset, "train": exe}, ("train", "aux"))
    assert r.status_code == 422 and r.json()["error"]["param"] == "train"


def test_size_and_row_limits(make_api: Callable[..., Api], dataset: dict[str, Path]) -> None:
    small = make_api(max_upload_bytes=4000)
    r = small.create(dataset)
    assert r.status_code == 413
    assert "MUSCLE_MAX_UPLOAD_BYTES" in r.json()["error"]["message"]
    rows = make_api(max_rows=100)
    r = rows.create(dataset)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "too_many_rows" and err["param"] == "train" and "160 rows" in err["message"]


def test_idempotency_key(api: Api, dataset: dict[str, Path]) -> None:
    first = api.create(dataset, ("train", "aux"), **{"Idempotency-Key": "abc"})
    again = api.create(dataset, ("train", "aux"), **{"Idempotency-Key": "abc"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    changed = api.create(dataset, ("train", "aux"), config='{"epochs": 3}', **{"Idempotency-Key": "abc"})
    assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"
    theirs = api.create(dataset, ("train", "aux"), key=api.other, **{"Idempotency-Key": "abc"})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]  # keys are per owner
    assert len(api.client.get("/jobs", headers=api.h()).json()["data"]) == 1


def test_a_failed_validation_does_not_burn_the_idempotency_key(api: Api, dataset: dict[str, Path],
                                                               tmp_path: Path) -> None:
    bad = tmp_path / "train.tsv"
    bad.write_text("text\tlabel\n")
    assert api.create({**dataset, "train": bad}, ("train", "aux"),
                      **{"Idempotency-Key": "k2"}).status_code == 422
    assert api.create(dataset, ("train", "aux"), **{"Idempotency-Key": "k2"}).status_code == 201


def test_cancel_and_delete_a_queued_job(api: Api, dataset: dict[str, Path]) -> None:
    job_id = api.create(dataset, ("train", "aux")).json()["id"]
    assert api.client.delete(f"/jobs/{job_id}", headers=api.h()).status_code == 409  # not terminal
    r = api.client.post(f"/jobs/{job_id}/cancel", headers=api.h())
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["terminal"]
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=api.h()).json()["status"] == "cancelled"
    store = LocalArtifactStore(Path(api.settings.artifacts))
    assert store.size(f"jobs/{job_id}/inputs/train.tsv")
    assert api.client.get(f"/jobs/{job_id}/model", headers=api.h()).status_code == 404
    r = api.client.delete(f"/jobs/{job_id}", headers=api.h())
    assert r.status_code == 200 and r.json() == {"id": job_id, "object": "job.deleted", "deleted": True}
    assert api.client.get(f"/jobs/{job_id}", headers=api.h()).status_code == 404
    assert store.size(f"jobs/{job_id}/inputs/train.tsv") is None


def test_events_paging_and_stream_of_a_finished_job(api: Api, dataset: dict[str, Path]) -> None:
    job_id = api.create(dataset, ("train", "aux")).json()["id"]
    api.client.post(f"/jobs/{job_id}/cancel", headers=api.h())
    everything = api.client.get(f"/jobs/{job_id}/events", headers=api.h()).json()["data"]
    assert [e["type"] for e in everything][-1] == "job.cancelled"
    page = api.client.get(f"/jobs/{job_id}/events?limit=2", headers=api.h()).json()
    assert page["has_more"] and len(page["data"]) == 2
    rest = api.client.get(f"/jobs/{job_id}/events?after={page['last_id']}", headers=api.h()).json()
    assert [e["id"] for e in page["data"] + rest["data"]] == [e["id"] for e in everything]

    with api.client.stream("GET", f"/jobs/{job_id}/events?stream=true&after={everything[0]['id']}",
                           headers=api.h()) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert [json.loads(d)["id"] for d in data[:-1]] == [e["id"] for e in everything[1:]]


def test_broker_down_job_is_kept_and_sent_by_the_sweep(make_api: Callable[..., Api], dataset: dict[str, Path],
                                                       redis_url: str, queue_name: str) -> None:
    down = make_api(broker_url=f"redis://127.0.0.1:{free_port()}/0", dispatch_grace_seconds=0)
    assert down.client.get("/readyz").status_code == 503
    r = down.create(dataset, ("train", "aux"))
    assert r.status_code == 201 and r.json()["status"] == "queued"
    job_id = r.json()["id"]
    assert get_job(down.settings.database_url, job_id).dispatched_at is None
    types = [e["type"] for e in down.client.get(f"/jobs/{job_id}/events", headers=down.h()).json()["data"]]
    assert "warning" in types

    # A worker's sweep sends it once the broker is reachable.
    from api.queue import Dispatcher
    from worker.sweeper import sweep_once

    up = down.settings.model_copy(update={"broker_url": redis_url})
    assert job_id in sweep_once(up, Dispatcher(up).send)
    import redis
    assert any(job_id in m.decode() for m in redis.Redis.from_url(redis_url).lrange(queue_name, 0, -1))


def test_prometheus_metrics(api: Api, dataset: dict[str, Path]) -> None:
    api.create(dataset, ("train", "aux"))
    text = api.client.get("/metrics").text
    assert 'muscle_jobs{status="queued"}' in text and "muscle_http_requests_total" in text


def test_a_model_that_cannot_be_resolved_is_refused_with_the_reason(api: Api, dataset: dict[str, Path]) -> None:
    r = api.create(dataset, ("train", "aux"), config='{"model": "no-such-org/no-such-model"}')
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "no-such-org/no-such-model" in message and "not a known alias" in message
    assert api.client.get("/jobs", headers=api.h()).json()["data"] == []


def test_the_docs_page_loads_its_assets_from_the_service(api: Api) -> None:
    """No CDN: /docs works on a machine without internet access."""
    import re

    page = api.client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and not [a for a in assets if a.startswith(("http://", "https://", "//"))], assets
    for asset in assets:
        assert api.client.get(asset).status_code == 200, asset
    assert "swagger-ui-bundle.js" in page


def test_the_operator_chooses_which_models_and_devices_a_job_may_use(
        make_api: Callable[..., Api], dataset: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text('{"model_type": "bert"}')
    api = make_api(allowed_models=["minilm", "hub:sentence-transformers/*", str(models)],
                   allowed_devices=["auto", "cpu"])

    def answer(**config: Any) -> tuple[int, str, str | None]:
        r = api.create(dataset, ("train", "aux"), config=json.dumps(config))
        body = r.json()
        error = body.get("error") or {}
        return r.status_code, error.get("code", ""), error.get("param")

    assert answer(model="/etc") == (422, "model_not_allowed", "config.model")  # a folder not listed
    assert answer(model="../../etc") == (422, "model_not_allowed", "config.model")
    assert answer(model="someone/model") == (422, "model_not_allowed", "config.model")
    assert answer(model="sentence-transformers/x")[1] == "invalid_config"  # allowed, but not resolvable here
    assert answer(model=str(models / "tiny"))[0] == 201  # under an allowed folder
    assert answer(device="cuda:3") == (422, "device_not_allowed", "config.device")
    assert answer(device="cpu")[0] == 201


def test_a_key_with_too_many_waiting_jobs_gets_429_with_retry_after(
        make_api: Callable[..., Api], dataset: dict[str, Path]) -> None:
    api = make_api(max_queued_jobs_per_key=2)
    assert [api.create(dataset, ("train", "aux")).status_code for _ in range(2)] == [201, 201]
    r = api.create(dataset, ("train", "aux"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.json()["error"]["code"] == "too_many_queued_jobs"
    assert api.create(dataset, ("train", "aux"), key=api.other).status_code == 201  # per key
    first = api.client.get("/jobs", headers=api.h()).json()["data"][-1]["id"]
    api.client.post(f"/jobs/{first}/cancel", headers=api.h())
    assert api.create(dataset, ("train", "aux")).status_code == 201
