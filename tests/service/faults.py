"""A Celery worker with a test-only fault point: `python -m tests.service.faults <celery arguments>`.

MUSCLE_TEST_HANG_AT names where the worker stops during a job: an engine phase (`screening`,
`exporting`, ...: right after the phase is recorded) or `upload` (the model archive is in the artifact
store, the other artifacts are not). There it touches MUSCLE_TEST_MARKER and waits until a file named
like the marker plus `.go` appears, so a test can kill it (kill -9) or change the world (fill the
disk) at a known point. MUSCLE_TEST_DISK_FULL_FLAG: the local artifact store fails with ENOSPC while
that file exists (for machines where the test cannot mount a small tmpfs). Nothing here is imported by
the product.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def _hang(marker: Path) -> None:
    marker.touch()
    go = marker.with_name(marker.name + ".go")
    while not go.exists():
        time.sleep(0.1)


def simulate_full_disk(flag: Path) -> None:
    """Where no small file system can be mounted: the local artifact store answers ENOSPC while `flag`
    exists, as a full disk would."""
    import errno

    from core.service import artifacts

    put_file = artifacts.LocalArtifactStore.put_file

    def put(self: Any, key: str, path: Path) -> None:
        if flag.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))
        put_file(self, key, path)

    artifacts.LocalArtifactStore.put_file = put  # type: ignore[method-assign]


def install(point: str, marker: Path) -> None:
    if point == "upload":
        from core.service import artifacts

        for cls in (artifacts.S3ArtifactStore, artifacts.LocalArtifactStore):
            put_file = cls.put_file

            def put(self: Any, key: str, path: Path, _put: Any = put_file) -> None:
                _put(self, key, path)
                if key.endswith("/model.tar.gz"):
                    _hang(marker)

            cls.put_file = put  # type: ignore[method-assign]
        return
    from worker.progress import ProgressRecorder

    record = ProgressRecorder.__call__

    def call(self: ProgressRecorder, event: Any) -> None:
        record(self, event)
        if event.kind == "phase" and event.phase == point:
            _hang(marker)

    ProgressRecorder.__call__ = call  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ["MUSCLE_TEST_HANG_AT"], Path(os.environ["MUSCLE_TEST_MARKER"]))
    if os.environ.get("MUSCLE_TEST_DISK_FULL_FLAG"):
        simulate_full_disk(Path(os.environ["MUSCLE_TEST_DISK_FULL_FLAG"]))
    from celery.__main__ import main

    sys.argv = ["celery", *sys.argv[1:]]
    sys.exit(main())
