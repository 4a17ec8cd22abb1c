"""The event log's types: one list in code (core/service/events.py), the same list in the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.service.db import session_scope
from core.service.events import EVENT_TYPES, add_event
from tests.service.helpers import make_job

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_list_every_event_type_and_no_other() -> None:
    doc = (ROOT / "docs" / "service.md").read_text()
    section = doc[doc.index("### Events"):]
    section = section[:section.index("\n#", 1)]
    types_line = section[section.index("Types:"):section.index("Each has")]
    documented = set(re.findall(r"`([a-z_.]+)`", types_line))
    assert documented == EVENT_TYPES


def test_every_type_the_code_writes_is_a_known_one() -> None:
    written: set[str] = set()
    for path in [*ROOT.glob("api/**/*.py"), *ROOT.glob("worker/**/*.py"), *ROOT.glob("core/service/**/*.py")]:
        text = path.read_text()
        written |= set(re.findall(r'add_event\(\s*\w+,\s*[\w.]+,\s*"([^"]+)"', text))
        written |= set(re.findall(r'self\._write\(\("([^"]+)"', text))
        written |= set(re.findall(r'"(job\.[a-z_]+)" if ', text))
    assert written and written <= EVENT_TYPES, written - EVENT_TYPES
    assert {"job.deferred", "metrics", "job.cancel_requested"} <= written  # the three patterns above matched


def test_an_unknown_type_or_level_is_refused(sqlite_url: str) -> None:
    job_id = make_job(sqlite_url)
    with session_scope(sqlite_url) as db:
        with pytest.raises(ValueError, match="job.finished"):
            add_event(db, job_id, "job.finished", "no such type")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="warning"):
            add_event(db, job_id, "message", "a level is info, warn or error", level="warning")  # type: ignore[arg-type]
