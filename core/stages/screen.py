"""Stage 2, screen: drop the training rows the screen finds, before the backbone loads.

Input: the `PreparedData` from validation, the `TrainConfig`, the output folder and the progress callback.
Output: the screen's summary (`ScreenSummary`: the dict `ScreenReport.summary()` gives, which metrics.json
carries as `screen`; None when `config.screen` is off). As a side effect `data.train` is replaced by the
kept rows and `screen/screen.json` and `screen/removed.tsv` are written; a resumed job reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import TrainConfig
from core.errors import DataError
from core.interface import ProgressCallback, ProgressEvent
from core.prepared import PreparedData

if TYPE_CHECKING:
    from core.screen.content import EmbedProgress

ScreenSummary = dict[str, Any] | None


def embedding_progress(emit: ProgressCallback, parts: int = 10) -> EmbedProgress:
    """A `progress(done, total)` for the content screen's embedding pass that logs each tenth once."""
    logged = [0]

    def progress(done: int, total: int) -> None:
        part = parts * done // max(total, 1)
        if part > logged[0]:
            logged[0] = part
            emit(ProgressEvent(kind="log", phase="screening",
                               message=f"content screen: embedded {done} of {total} rows"))

    return progress


def run_screen(data: PreparedData, config: TrainConfig, out_dir: Path, emit: ProgressCallback,
               resume: bool = False) -> ScreenSummary:
    """Drop the rows the screen finds from `data.train` (in place) and write screen.json and removed.tsv.

    It checks suspects against the trusted aux file's rows (a --select file is for choosing the epoch)."""
    if not config.screen:
        return None
    from core.screen.stage import kept, saved_training_rows, screen_with

    saved = out_dir / "screen" / "screen.json"
    if resume and saved.is_file():  # the screen is deterministic: a resumed job takes what it found
        summary = json.loads(saved.read_text())
        data.train = saved_training_rows(data.train, summary.pop("removed"), data.label_map.label2id)
        return summary

    emit(ProgressEvent(kind="phase", phase="screening", message="screening the training rows"))
    if config.screen_content:
        emit(ProgressEvent(kind="log", phase="screening", message="content screen: embedding the training rows"))
    report = screen_with(config, data.train, data.trusted, data.label_map.names, embedding_progress(emit))
    if config.screen_learned:
        from core.models.backbones import resolve_model_source
        from core.screen.learned import backbone_bait
        from core.screen.stage import add_learned, learned_settings_from

        emit(ProgressEvent(kind="log", phase="screening", message="learned screen: cross-fitted bait run"))
        represent = backbone_bait(resolve_model_source(config.model), data.label_map, config)
        report = add_learned(report, data.train, data.trusted, represent, learned_settings_from(config),
                             data.label_map.names)
    report.write(out_dir / "screen")
    data.train = kept(data.train, report)
    if len(data.train) == 0:
        raise DataError("the screen removed every training row; nothing is left to train on "
                        "(screen: false trains on all rows)", role="train")
    emit(ProgressEvent(kind="log", phase="screening",
                       message=f"screen removed {len(report.removed)} of {report.rows_in} rows"
                               + (f", {len(report.relabel)} back as counter-examples" if report.relabel else ""),
                       metrics={"screen": report.summary(max_suspects=5)}))
    return report.summary()
