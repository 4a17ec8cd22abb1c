"""A small HTTP client for the job service (httpx): files, jobs, events, downloads.

It talks to the API over the wire only, as any client would. `MUSCLE_URL` and `MUSCLE_API_KEY` give
the defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
PURPOSES = ("train", "aux", "eval", "probe")


class ClientError(Exception):
    """An error answer from the service (its `error` object) or a failed transfer."""

    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class JobsClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        self.url = (url or os.environ.get("MUSCLE_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("MUSCLE_API_KEY")
        if not key:
            raise ClientError("no API key: set MUSCLE_API_KEY or pass --api-key (make one with "
                              "`muscle apikey create --name NAME`)")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------
    def _json(self, response: Any) -> Any:
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {"message": response.text[:500]}
            where = ", ".join(f"{k} {error[k]}" for k in ("param", "file", "line", "field") if error.get(k))
            raise ClientError(f"{response.status_code} {error.get('code', 'error')}: {error.get('message', '')}"
                              + (f" ({where})" if where else ""), response.status_code, error)
        return response.json()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self._json(self.http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the service at {self.url}: {exc}") from exc

    # -- files -------------------------------------------------------------------------------------
    def upload(self, path: str | Path, purpose: str, text_column: str = "text",
               label_column: str = "label") -> dict[str, Any]:
        path = Path(path)
        with open(path, "rb") as fh:
            return self._request("POST", "/files", files={"file": (path.name, fh)},
                                 data={"purpose": purpose, "text_column": text_column,
                                       "label_column": label_column})

    def files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        return self._pages("/files", {"purpose": purpose} if purpose else {})

    # -- jobs --------------------------------------------------------------------------------------
    def create_job(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/jobs", json=body, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}")

    def jobs(self, status: list[str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self._pages("/jobs", {"status": status} if status else {}, limit)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/cancel")

    def _pages(self, path: str, params: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = None
        while True:
            page = self._request("GET", path, params={**params, "limit": 100, **({"after": after} if after else {})})
            out += page["data"]
            if limit is not None and len(out) >= limit:
                return out[:limit]
            if not page["has_more"]:
                return out
            after = page["last_id"]

    def events(self, job_id: str, follow: bool = False, after: int = 0) -> Iterator[dict[str, Any]]:
        """The job's events, oldest first; with `follow`, a live SSE stream until the job ends
        (reconnecting from the last event seen if the connection drops)."""
        import httpx

        if not follow:
            while True:
                page = self._request("GET", f"/jobs/{job_id}/events", params={"after": after, "limit": 1000})
                yield from page["data"]
                if not page["has_more"]:
                    return
                after = page["last_id"]
        while True:
            try:
                with self.http.stream("GET", f"/jobs/{job_id}/events", params={"stream": "true", "after": after},
                                      timeout=httpx.Timeout(60.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._json(response)
                    for kind, data in _sse(response.iter_lines()):
                        if kind == "done":
                            return
                        event = json.loads(data)
                        after = event["id"]
                        yield event
            except httpx.TransportError:
                continue  # resume after the last event seen

    def download(self, job_id: str, name: str, dest: str | Path) -> Path:
        """Download one artifact, check its sha256 against the job's record, and unpack archives into
        `dest` (a folder). Returns the folder."""
        job = self.job(job_id)
        meta = (job.get("artifacts") or {}).get(name)
        if meta is None:
            raise ClientError(f"job {job_id} has no {name} (status {job['status']})")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".download-", delete=False) as tmp:
            with self.http.stream("GET", f"/jobs/{job_id}/{name}") as response:
                if response.status_code >= 400:
                    response.read()
                    self._json(response)
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    tmp.write(chunk)
        part = Path(tmp.name)
        if digest.hexdigest() != meta["sha256"]:
            part.unlink()
            raise ClientError(f"{name}: checksum mismatch (got {digest.hexdigest()}, the job says "
                              f"{meta['sha256']}); nothing was written")
        if meta["filename"].endswith(".tar.gz"):
            with tarfile.open(part, "r:gz") as tar:
                tar.extractall(dest, filter=_strip_top)
            part.unlink()
        else:
            part.replace(dest / meta["filename"])
        return dest


def _strip_top(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """An archive holds `model/...`: unpack its contents straight into the destination, through the
    `data` filter (which refuses absolute paths and links out of the destination)."""
    _, _, rest = member.name.partition("/")
    if not rest:
        return None
    return tarfile.data_filter(member.replace(name=rest, deep=False), path)


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from server-sent-event lines."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
