"""How clean a reference pool of reader-agreed kept rows would be: the default job's screen on a 10% file,
then the content reader's cross-fitted P(label | frozen embedding) on the kept rows; per bar, the share of
clean and of poisoned kept rows whose own label gets at least that probability.

    .venv/bin/python bench/screen_data.py
    .venv/bin/python bench/reference_pool.py stylebkd hiddenkiller
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.content_disagreement import embeddings  # noqa: E402
from bench.screen_data import train_path  # noqa: E402
from bench.screen_eval import screened  # noqa: E402
from core.config import resolve_config  # noqa: E402
from core.screen.content import content_probabilities  # noqa: E402
from core.screen.stage import content_settings_from  # noqa: E402


def main(attacks: list[str]) -> None:
    settings = content_settings_from(resolve_config("default"))  # the reader's folds and seed, as the job's
    assert settings is not None
    for attack in attacks:
        train, _, report = screened(train_path(attack, 0.1))
        removed = report.removed_rows
        kept = np.array([i for i in range(len(train)) if i not in removed])
        y = np.array([e.label for e in train])[kept]
        poisoned = np.array([bool(e.poisoned) for e in train])[kept]
        proba = content_probabilities(embeddings([train[i].text for i in kept]), y, 2, settings.folds,
                                      settings.seed)
        own = proba[np.arange(len(kept)), y]
        for bar in (0.5, 0.3, 0.2, 0.1):
            agreed = own >= bar
            print(f"{attack} bar {bar}: clean kept {agreed[~poisoned].mean():.3f} of {(~poisoned).sum()}, "
                  f"poisoned kept {agreed[poisoned].mean():.3f} of {poisoned.sum()}; poisoned share of the pool "
                  f"{(agreed & poisoned).sum() / agreed.sum():.4f} (all kept rows: {poisoned.mean():.4f})")


if __name__ == "__main__":
    main(sys.argv[1:])
