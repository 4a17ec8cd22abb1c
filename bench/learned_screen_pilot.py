"""Pilot of the learned screen on one fold: does a one-epoch bait run put triggered rows in a group of
their own that the 96 trusted aux rows avoid?

Fine-tunes MiniLM (vanilla, the default job's lr, 1 epoch) on a seeded half of the attack's 10% file,
represents the other half and the aux rows (what the output layer sees), then runs
`core.screen.clusters.absent_clusters` per class for k = 2, 3, 4, 6, 8 and prints recall and false
removals against the `poisoned` column. About 10 minutes on this 2-core CPU.

    .venv/bin/python bench/screen_data.py
    .venv/bin/python bench/learned_screen_pilot.py hiddenkiller > bench/results/learned_screen_pilot.txt
    .venv/bin/python bench/learned_screen_pilot.py hiddenkiller --frozen   # no bait: every row, frozen
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.screen_data import OUT, train_path  # noqa: E402
from core.config import resolve_config  # noqa: E402
from core.data.dataset import load_examples  # noqa: E402
from core.data.labels import LabelMap  # noqa: E402
from core.screen.clusters import absent_clusters  # noqa: E402
from core.screen.learned import backbone_bait  # noqa: E402


def frozen_embeddings(texts: list[str]) -> np.ndarray:
    """Mean-pooled last layer of the untouched backbone (how all-MiniLM-L6-v2 was trained to embed)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from core.models.backbones import resolve_model_source

    source = resolve_model_source("minilm")
    tok, model = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            enc = tok(texts[i:i + 128], padding=True, truncation=True, max_length=128, return_tensors="pt")
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((model(**enc).last_hidden_state * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def main(attack: str, frozen: bool = False) -> int:
    labels = LabelMap.from_labels(["0", "1"])
    rows = load_examples(train_path(attack, 0.1), labels, role="train")
    aux = load_examples(OUT / "aux.tsv", labels, role="aux")
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    half = len(order) // 2
    train_rows, held = [rows[i] for i in order[:half]], [rows[i] for i in order[half:]]
    if frozen:  # every row, no training
        held = rows
        held_feats, aux_feats = frozen_embeddings([r.text for r in rows]), frozen_embeddings([r.text for r in aux])
    else:
        from core.models.backbones import resolve_model_source

        config = resolve_config("default", {"max_length": 128, "screen": False})
        represent = backbone_bait(resolve_model_source("minilm"), labels, config)
        held_feats, aux_feats = represent(train_rows, held, aux)
    y = [r.label for r in held]
    poisoned = np.array([bool(r.poisoned) for r in held])
    print(f"held {len(held)} poisoned {poisoned.sum()} trusted {len(aux)}")
    for k in (2, 3, 4, 6, 8, 12):
        clusters = absent_clusters(held_feats, y, aux_feats, [r.label for r in aux], k=k, fdr=0.05)
        flagged = sorted({i for c in clusters if c.flagged for i in c.rows})
        recall = poisoned[flagged].sum() / poisoned.sum()
        frr = (~poisoned[flagged]).sum() / (~poisoned).sum()
        target = [(len(c.rows), int(poisoned[list(c.rows)].sum()), c.trusted, f"{c.p_value:.1e}", c.flagged)
                  for c in clusters if c.label == 1]
        print(f"k={k} recall {recall:.3f} false removals {frr:.3f} target-class clusters "
              f"(rows, poisoned, trusted, p, flagged): {target}")
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    raise SystemExit(main(args[0] if args else "hiddenkiller", frozen="--frozen" in sys.argv))
