"""Pilot data: the default screen's kept rows plus its removed rows that read as another class, relabelled.

A trigger the screen found only in part is still in the kept rows; the removed rows that carry it and read
as another class (a dirty-label trigger's rows) can teach the model that the trigger says nothing about the
label, if they stay in training with the label their content gives. The rows and their labels are the
default screen's own counter-examples (`screen_relabel`, `core.screen.relabel`), on the cached embeddings.
Writes MUSCLE_SCREEN_DATA-style folders (train-A-R.tsv, aux, select, probes) for `bench/e2e.py --arm noscreen`.

    .venv/bin/python bench/counterexample_data.py [--dest DIR] stylebkd:0.1 hiddenkiller:0.1
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import _read, _write  # noqa: E402
from bench.screen_data import OUT  # noqa: E402
from bench.screen_eval import screened  # noqa: E402

DEST = ROOT / "bench" / "runs" / "cf-data"


def build(attack: str, rate: float, dest: Path = DEST) -> None:
    name = f"train-{attack}-{rate:g}.tsv"
    _, _, report = screened(OUT / name)
    gone, back = report.removed_rows, report.relabel
    rows = _read(OUT / name)
    out, flipped, poisoned_flipped = [], 0, 0
    for i, row in enumerate(rows):
        if i not in gone:
            out.append(row)
        elif i in back:
            out.append(replace(row, label=str(back[i])))
            flipped += 1
            poisoned_flipped += row.extra.get("poisoned") == "1"
    dest.mkdir(parents=True, exist_ok=True)
    _write(dest / name, out, ("poisoned", "orig_label"))
    for f in OUT.iterdir():
        if not f.name.startswith("train-") and not (dest / f.name).exists():
            shutil.copy(f, dest / f.name)
    print(f"{name}: removed {len(gone)}, back with the read label {flipped} ({poisoned_flipped} poisoned), "
          f"rows {len(out)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    dest = DEST
    if args[:1] == ["--dest"]:
        dest, args = Path(args[1]).resolve(), args[2:]
    for arg in args:
        a, r = arg.split(":")
        build(a, float(r), dest)
