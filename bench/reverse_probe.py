"""Does a found trigger come to mean the other class? The reverse probe of a finished run's model.

Counter-examples (`screen_relabel`) put a trigger's rows back in training with the label their content
gives; where the screen found every triggered row, the trigger then appears with that label only, and the
model may learn it as a cue for it. Here: the SST-2 test rows of the target class (1), triggered
(badnets, addsent; seed 0), and the share the model calls non-target, against the same share on the clean
rows (its error rate on them: the floor). HiddenKiller has released paraphrases of positive training
sentences: those that none of the benchmark's HiddenKiller files (1, 3, 10%) trains on are its triggered
target rows ("hiddenkiller+"), read against a model that never saw the template (a backdoor-free run).

    .venv/bin/python bench/reverse_probe.py bench/runs/e2e/rl-badnets-0.1-default ...
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_DATA, _read  # noqa: E402
from bench.screen_data import train_path  # noqa: E402
from core.attacks.probes import build_probe  # noqa: E402
from core.attacks.triggers import parse_trigger  # noqa: E402
from core.data.dataset import load_examples  # noqa: E402
from core.data.labels import LabelMap  # noqa: E402


def reverse(run: Path) -> dict[str, float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.training.predict import predict_labels

    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    test = load_examples(DEFAULT_DATA / "sst2" / "test.tsv", LabelMap.from_labels(["0", "1"]), role="eval")
    texts = {"clean": [ex.text for ex in test if ex.label == 1]}
    for name in ("badnets", "addsent"):  # the class-1 rows triggered: a probe whose "target" is class 0
        texts[name] = [ex.text for ex in build_probe(test, parse_trigger(name)[1], target=0, seed=0)]
    texts["hiddenkiller+"] = unused_positive_paraphrases()
    return {name: sum(p != 1 for p in predict_labels(model, tokenizer, t)) / len(t) for name, t in texts.items()}


def unused_positive_paraphrases() -> list[str]:
    """The released HiddenKiller paraphrases of positive sentences that no benchmark file trains on."""
    used = {r.text for rate in (0.01, 0.03, 0.1) for r in _read(train_path("hiddenkiller", rate))}
    released = _read(DEFAULT_DATA / "sst2-hiddenkiller" / "train.tsv")
    return [r.text for r in released
            if r.extra.get("poisoned") == "1" and r.extra.get("orig_label") == "1" and r.text not in used]


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        shares = reverse(Path(arg))
        print(f"{arg}: target rows called non-target: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items()))
