"""Files by id (POST/GET/DELETE /files) and jobs made from them with a JSON body, in-process on SQLite
with the real Redis broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import Api

pytestmark = pytest.mark.service

PURPOSES = {"train": "train", "aux": "aux", "eval": "eval", "badnets": "probe"}


def upload(api: Api, path: Path, purpose: str, key: str | None = None) -> Any:
    return api.client.post("/files", headers=api.h(key), files={"file": (path.name, path.read_bytes())},
                           data={"purpose": purpose})


def upload_all(api: Api, dataset: dict[str, Path]) -> dict[str, str]:
    ids = {}
    for role, purpose in PURPOSES.items():
        r = upload(api, dataset[role], purpose)
        assert r.status_code == 201, r.text
        ids[role] = r.json()["id"]
    return ids


def body(ids: dict[str, str], **settings: Any) -> dict[str, Any]:
    return {"training_file": ids["train"], "aux_file": ids["aux"], "eval_file": ids["eval"],
            "probe_files": {"badnets": ids["badnets"]}, "epochs": 1, "batch_size": 8, "max_length": 32,
            **settings}


def test_upload_describes_the_file_and_is_stored_once(api: Api, dataset: dict[str, Path]) -> None:
    r = upload(api, dataset["train"], "train")
    assert r.status_code == 201, r.text
    f = r.json()
    assert f["id"].startswith("file_") and f["object"] == "file" and f["purpose"] == "train"
    assert f["filename"] == "train.tsv" and f["rows"] == 160 and f["bytes"] == dataset["train"].stat().st_size
    assert f["columns"][:2] == ["text", "label"] and sum(f["labels"].values()) == 160
    assert set(f["labels"]) == {"0", "1"} and len(f["sha256"]) == 64
    again = upload(api, dataset["train"], "train")
    assert again.status_code == 200 and again.json()["id"] == f["id"]
    assert api.client.get(f"/files/{f['id']}", headers=api.h()).json() == f
    listed = api.client.get("/files?purpose=train", headers=api.h()).json()
    assert [x["id"] for x in listed["data"]] == [f["id"]]
    stored = list((api.settings.data_dir).rglob(f"{f['sha256']}.tsv"))
    assert len(stored) == 1  # the bytes, once


def test_files_are_visible_only_to_their_key(api: Api, dataset: dict[str, Path]) -> None:
    file_id = upload(api, dataset["aux"], "aux").json()["id"]
    other = api.h(api.other)
    for method in ("GET", "DELETE"):
        r = api.client.request(method, f"/files/{file_id}", headers=other)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", method
    assert api.client.get("/files", headers=other).json()["data"] == []
    r = api.client.post("/jobs", headers=other, json={"training_file": file_id, "aux_file": file_id})
    assert r.status_code == 422 and r.json()["error"]["param"] == "training_file"


def test_bad_upload_is_422_with_line_and_field(api: Api, tmp_path: Path) -> None:
    bad = tmp_path / "rows.tsv"
    bad.write_text("text\tlabel\ngood\t1\n\t0\n")
    err = upload(api, bad, "train").json()["error"]
    assert err["code"] == "invalid_file" and err["file"] == "rows.tsv" and err["line"] == 3
    assert err["field"] == "text" and "rows.tsv" in err["message"] and "tmp" not in err["message"]
    no_label = tmp_path / "nolabel.tsv"
    no_label.write_text("text\nsome triggered row\n")
    assert upload(api, no_label, "train").status_code == 422
    assert upload(api, no_label, "probe").status_code == 201  # a probe may leave the label out
    r = upload(api, no_label, "weights")
    assert r.status_code == 422 and r.json()["error"]["param"] == "purpose"
    assert [f["purpose"] for f in api.client.get("/files", headers=api.h()).json()["data"]] == ["probe"]


def test_json_job_from_file_ids(api: Api, dataset: dict[str, Path]) -> None:
    ids = upload_all(api, dataset)
    r = api.client.post("/jobs", headers=api.h(), json=body(ids, target_label=1, metadata={"team": "a"}))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["config"]["epochs"] == 1 and job["config"]["target_label"] == "1"
    assert {role: f["file_id"] for role, f in job["files"].items()} == {
        "train": ids["train"], "aux": ids["aux"], "eval": ids["eval"], "probe:badnets": ids["badnets"]}
    assert job["files"]["train"]["filename"] == "train.tsv" and job["metadata"] == {"team": "a"}
    assert job["validation"]["rows"]["probe:badnets"] > 0


@pytest.mark.parametrize("change, param", [
    ({"epochs": 0}, "epochs"),
    ({"no_such_setting": 1}, "no_such_setting"),
    ({"training_file": "file_missing"}, "training_file"),
    ({"aux_file": None}, "aux_file"),
])
def test_bad_json_job_is_422_naming_the_field(api: Api, dataset: dict[str, Path], change: dict[str, Any],
                                              param: str) -> None:
    ids = upload_all(api, dataset)
    r = api.client.post("/jobs", headers=api.h(), json={**body(ids), **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] in (param, f"config.{param}")
    assert api.client.get("/jobs", headers=api.h()).json()["data"] == []


def test_a_file_of_another_purpose_is_refused(api: Api, dataset: dict[str, Path]) -> None:
    ids = upload_all(api, dataset)
    r = api.client.post("/jobs", headers=api.h(), json={**body(ids), "aux_file": ids["eval"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "aux_file"
    assert "purpose 'eval'" in r.json()["error"]["message"]


def test_other_content_types_are_415(api: Api) -> None:
    r = api.client.post("/jobs", headers=api.h(), content=b"hello")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_delete_is_refused_while_an_unfinished_job_uses_the_file(api: Api, dataset: dict[str, Path]) -> None:
    ids = upload_all(api, dataset)
    sha = api.client.get(f"/files/{ids['train']}", headers=api.h()).json()["sha256"]
    assert list(api.settings.data_dir.rglob(f"{sha}.tsv"))
    job_id = api.client.post("/jobs", headers=api.h(), json=body(ids)).json()["id"]
    r = api.client.delete(f"/files/{ids['train']}", headers=api.h())
    assert r.status_code == 409 and job_id in r.json()["error"]["message"]
    assert api.client.delete(f"/files/{ids['aux']}", headers=api.h()).status_code == 409
    api.client.post(f"/jobs/{job_id}/cancel", headers=api.h())
    r = api.client.delete(f"/files/{ids['train']}", headers=api.h())
    assert r.status_code == 200 and r.json() == {"id": ids["train"], "object": "file.deleted", "deleted": True}
    assert api.client.get(f"/files/{ids['train']}", headers=api.h()).status_code == 404
    assert not list(api.settings.data_dir.rglob(f"{sha}.tsv"))  # its bytes went with it


def test_a_multipart_job_registers_its_files(api: Api, dataset: dict[str, Path]) -> None:
    job = api.create(dataset).json()
    listed = {f["id"]: f for f in api.client.get("/files", headers=api.h()).json()["data"]}
    assert {f["file_id"] for f in job["files"].values()} == set(listed)
    assert sorted(f["purpose"] for f in listed.values()) == ["aux", "eval", "probe", "train"]
    again = api.client.post("/jobs", headers=api.h(), json=body(
        {"train": job["files"]["train"]["file_id"], "aux": job["files"]["aux"]["file_id"],
         "eval": job["files"]["eval"]["file_id"], "badnets": job["files"]["probe:badnets"]["file_id"]}))
    assert again.status_code == 201, again.text
    assert again.json()["files"]["train"]["sha256"] == job["files"]["train"]["sha256"]


def test_openapi_documents_the_job_body(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    content = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    schema = doc["components"]["schemas"]["JobCreate"]
    props = schema["properties"]
    assert set(schema["required"]) == {"training_file", "aux_file"}
    for name in ("training_file", "aux_file", "eval_file", "probe_files", "epochs", "lr", "method",
                 "target_label", "screen", "seed"):
        assert props[name].get("description"), name
    assert all(p.get("description") for p in props.values()), [n for n, p in props.items()
                                                                if not p.get("description")]
    assert {"type": "integer"} in props["epochs"]["anyOf"]
    assert {"type": "string"} in props["training_file"].values() or props["training_file"]["type"] == "string"
    assert "/files" in doc["paths"] and "/files/{file_id}" in doc["paths"]
