"""Service settings. Every field is an environment variable with the prefix `MUSCLE_`.

The defaults make the embedded mode work with no external service: SQLite and a SQLite-backed broker
under MUSCLE_DATA_DIR, artifacts on the local disk. docs/service.md lists every variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The queue contract between api/ and worker/: a task name and its one argument, the job id.
TASK_NAME = "muscle.run_job"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSCLE_", extra="ignore")

    data_dir: Path = Field(Path("muscle-data"), description="root for the embedded database, broker, "
                           "artifacts and work dirs")
    database_url: str = Field("", description="SQLAlchemy URL; default sqlite under data_dir")
    broker_url: str = Field("", description="Celery broker URL; default a SQLite broker under data_dir")
    artifacts: str = Field("", description="artifact store: a local directory or s3://bucket/prefix")
    work_dir: Path | None = Field(None, description="worker scratch space (inputs, checkpoints); keep "
                                  "it on a persistent volume so a restarted worker can resume")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto ...)")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(None, description="URL printed by `muscle serve`")

    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1, description="limit on one POST /jobs body (413)")
    max_rows: int = Field(1_000_000, ge=1, description="limit on rows in any one uploaded file (422)")
    max_probe_files: int = Field(16, ge=0)
    max_queued_jobs_per_key: int = Field(20, ge=0, description="jobs a key may have waiting (validating "
                                         "or queued); more answer 429 with Retry-After; 0 = no limit")
    max_running_jobs_per_key: int = Field(0, ge=0, description="jobs of one key a worker pool runs at once; "
                                          "a worker that picks one more defers it; 0 = no limit")
    defer_seconds: float = Field(15.0, gt=0, description="how long a deferred job waits before a worker "
                                 "looks at it again")
    allowed_models: list[str] = Field(["minilm", "hub:*"], description="models a job may name (JSON list): "
                                      "exact names, fnmatch patterns, `hub:PATTERN` for hub ids, a folder "
                                      "path for a local model (never a folder not listed); `*` allows all")
    allowed_devices: list[str] = Field(["auto", "cpu"], description="devices a job may ask for (JSON list)")

    queue: str = "muscle"
    worker_metrics_port: int = Field(0, ge=0, description="port of the worker's Prometheus exporter; 0 = off")
    worker_metrics_host: str = Field("127.0.0.1", description="address the worker's exporter binds")
    worker_nice: int = Field(10, ge=0, le=19, description="CPU niceness the worker raises itself to, so "
                             "a training sharing a host with the API does not slow its answers; 0 = unchanged")
    lease_seconds: float = Field(60.0, gt=0, description="a worker's claim on a job; renewed by heartbeat")
    heartbeat_seconds: float | None = Field(None, gt=0, description="default lease_seconds / 4")
    cancel_poll_seconds: float = Field(1.0, ge=0, description="how stale the cancel flag may be")
    progress_interval_seconds: float = Field(2.0, ge=0, description="min gap between step progress writes")
    reaper_interval_seconds: float = Field(15.0, gt=0)
    redispatch_after_seconds: float = Field(3600.0, gt=0, description="re-send a queued job no worker took")
    dispatch_grace_seconds: float = Field(10.0, ge=0, description="wait before re-sending an undelivered job")
    validating_timeout_seconds: float = Field(3600.0, gt=0, description="a job still validating after "
                                              "this (its API process died mid-request) is failed")
    max_attempts: int = Field(3, ge=1, description="worker losses before a job fails as worker_lost")
    visibility_timeout_seconds: int = Field(12 * 3600, ge=1, description="Redis/SQS broker redelivery")
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=1)
    sse_poll_seconds: float = Field(0.5, gt=0)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        # Resolve the data dir once so subprocesses and relative URLs agree.
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'muscle.sqlite'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"
        if not self.artifacts:
            self.artifacts = str(self.data_dir / "artifacts")
        if self.work_dir is None:
            self.work_dir = self.data_dir / "work"
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = max(self.lease_seconds / 4, 0.5)
        return self

    @property
    def work_path(self) -> Path:
        assert self.work_dir is not None
        return Path(self.work_dir)

    @property
    def heartbeat(self) -> float:
        assert self.heartbeat_seconds is not None
        return self.heartbeat_seconds

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.work_path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def broker_options(settings: Settings) -> dict[str, object]:
    """Celery `broker_transport_options` for the configured broker, shared by API and worker.

    Redis/SQS redeliver a message that is not acked within the visibility timeout; with late acks a
    long training would be redelivered while still running. The lease makes that duplicate harmless,
    and a long timeout keeps it rare. The SQLite broker passes its options to create_engine, so it
    gets none.
    """
    if settings.broker_url.startswith(("redis", "rediss", "sqs")):
        return {"visibility_timeout": settings.visibility_timeout_seconds}
    return {}
