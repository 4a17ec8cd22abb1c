"""End-to-end backdoor defenses the paper compares against, one module each
(docs/reference-implementation.md §7).

* data filters (run on the training set before training): `bki`, `cube`
  -> `filter_training(model, tokenizer, examples, ...) -> (kept_examples, report)`
* input corrector (run on inputs after training): `onion` -> `Onion.correct(texts) -> texts`
* input detectors (after training): `strip`, `rap` -> `.fit(clean_dev_texts)`, `.detect(texts) -> flags`

`common.detector_metrics` / `common.corrector_metrics` turn their output into CACC and ASR as
reference-implementation.md §5 does. `python -m core.defenses.baselines.run` drives them from files
(bench/grid.py).
"""

from __future__ import annotations

BASELINES: dict[str, str] = {
    "onion": "corrector",
    "strip": "detector",
    "rap": "detector",
    "bki": "filter",
    "cube": "filter",
}

# The victim training the authors' e2e configs use (reference-implementation.md §7): (epochs, warmup share of steps).
# The filters' final training on the kept rows uses the STRIP/RAP/BKI/CUBE config: 5 epochs, 3 warm-up.
VICTIM_TRAINING: dict[str, tuple[int, float]] = {
    "onion": (10, 0.0),
    "strip": (5, 0.6),
    "rap": (5, 0.6),
    "bki": (10, 0.0),  # BKI's own copy of the victim, trained 10 epochs without warm-up
    "cube": (1, 0.0),  # MuScleLoRA's copy: the victim after 1 epoch is the encoder
}
FILTERED_TRAINING: tuple[int, float] = (5, 0.6)


def kind(name: str) -> str:
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name]
