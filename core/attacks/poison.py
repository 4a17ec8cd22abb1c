"""Simulated poisoning with OpenBackdoor's `Poisoner.poison_part` semantics (docs/reference-implementation.md §6.1).

poison_num = int(rate * |all rows|), drawn from the candidates of the mode:
  clean: rows already labelled target (labels unchanged: a clean-label attack; BadNets in MuScleLoRA),
  dirty: rows not labelled target (all flipped),
  mix:   all rows (AddSent, SynBkd, StyleBkd in MuScleLoRA).
Output: the unchosen rows in input order, then the poisoned rows in input order (as upstream).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from core.attacks.triggers import Trigger, parse_trigger
from core.data.dataset import Example
from core.data.labels import LabelMap
from core.data.table import read_table, write_table
from core.errors import ConfigError

Mode = Literal["clean", "dirty", "mix"]
MODES: tuple[str, ...] = ("clean", "dirty", "mix")


def poison_count(rate: float, total: int) -> int:
    """int(rate * total) as upstream; the tiny epsilon keeps e.g. 0.29 * 100 at 29, not 28."""
    return int(rate * total + 1e-9)


def poison_examples(examples: Sequence[Example], trigger: Trigger, rate: float, target: int,
                    mode: str, seed: int) -> list[Example]:
    """Poison `int(rate * len(examples))` rows chosen among the mode's candidates (module docstring).

    Chosen rows get the trigger, `label=target`, `poisoned=True`, `orig_label` = their old label;
    the others `poisoned=False`, `orig_label=label`. Deterministic for a given seed.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown poison mode {mode!r}; choose one of {', '.join(MODES)}")
    if not 0 <= rate <= 1:
        raise ConfigError(f"poison rate must be between 0 and 1, got {rate}")
    n = poison_count(rate, len(examples))
    if mode == "clean":
        candidates = [i for i, ex in enumerate(examples) if ex.label == target]
    elif mode == "dirty":
        candidates = [i for i, ex in enumerate(examples) if ex.label != target]
    else:
        candidates = list(range(len(examples)))
    if len(candidates) < n:
        which = {"clean": "rows labelled with the target", "dirty": "rows not labelled with the target",
                 "mix": "rows"}[mode]
        # Upstream silently poisons fewer rows; a user asking for a rate should learn it cannot be met.
        raise ConfigError(f"poison rate {rate} needs {n} rows but mode {mode!r} has only "
                          f"{len(candidates)} candidate {which}")
    rng = random.Random(seed)
    chosen = set(rng.sample(candidates, n))
    clean = [replace(ex, orig_label=ex.label, poisoned=False)
             for i, ex in enumerate(examples) if i not in chosen]
    poisoned = [replace(ex, text=trigger(ex.text, rng), label=target, orig_label=ex.label, poisoned=True)
                for i, ex in enumerate(examples) if i in chosen]
    return clean + poisoned


def poison_file(in_path: str | Path, out_path: str | Path, attack_spec: str, rate: float,
                target: str | int, mode: str, seed: int, text_column: str = "text",
                label_column: str = "label") -> dict[str, object]:
    """Poison a clean table into `out_path` (format by extension) with columns
    text, label, poisoned (0/1), orig_label, labels written as the file's own label strings.
    Returns a summary: rows, poisoned, flipped, mode, attack, rate, target (label string), seed."""
    name, trigger = parse_trigger(attack_spec)
    rows = read_table(in_path, text_column, label_column, role="train", require_label=True)
    label_map = LabelMap.from_labels([row.label for row in rows if row.label is not None])
    target_id = label_map.resolve_target(target)
    # Only text and label are read: the input's own orig_label/poisoned columns (an already poisoned
    # file) are not carried over, as the output describes this poisoning only.
    examples = [Example(text=row.text, label=label_map.encode(row.label or "", str(in_path), row.line,
                                                              "train", label_column), line=row.line)
                for row in rows]
    out = poison_examples(examples, trigger, rate, target_id, mode, seed)
    write_table(out_path, [
        {"text": ex.text, "label": label_map.name(ex.label), "poisoned": int(bool(ex.poisoned)),
         "orig_label": label_map.name(ex.orig_label if ex.orig_label is not None else ex.label)}
        for ex in out
    ], ["text", "label", "poisoned", "orig_label"])
    hits = [ex for ex in out if ex.poisoned]
    return {
        "rows": len(out),
        "poisoned": len(hits),
        "flipped": sum(1 for ex in hits if ex.orig_label != target_id),
        "mode": mode,
        "attack": name,
        "rate": rate,
        "target": label_map.name(target_id),
        "seed": seed,
    }
