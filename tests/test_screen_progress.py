"""Progress while the content screen embeds the rows: the pass that takes minutes on a CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.interface import ProgressEvent
from core.screen.content import sentence_embeddings
from core.stages.screen import embedding_progress


def test_the_stage_logs_each_tenth_of_the_embedding_pass_once() -> None:
    events: list[ProgressEvent] = []
    progress = embedding_progress(events.append)
    for done in [*range(32, 1000, 32), 1000]:
        progress(done, 1000)
    assert [e.message for e in events][::3] == ["content screen: embedded 128 of 1000 rows",
                                                 "content screen: embedded 416 of 1000 rows",
                                                 "content screen: embedded 704 of 1000 rows",
                                                 "content screen: embedded 1000 of 1000 rows"]
    assert len(events) == 10 and all(e.kind == "log" and e.phase == "screening" for e in events)


def test_sentence_embeddings_report_each_batch(tiny: Callable[..., Path]) -> None:
    calls: list[tuple[int, int]] = []
    x = sentence_embeddings(str(tiny("bert")), [f"row {i}" for i in range(10)], batch_size=4, max_length=16,
                            progress=lambda done, total: calls.append((done, total)))
    assert x.shape[0] == 10
    assert calls == [(4, 10), (8, 10), (10, 10)]
