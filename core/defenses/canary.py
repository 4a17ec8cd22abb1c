"""Canary calibration: a secret synthetic trigger of our own, planted to measure backdoor suppression.

A user rarely knows the trigger hidden in their data, so the ASR of a named probe tells them little.
Instead we plant a trigger we know (a few random rare tokens, a random target class) in a copy of the
training data, train on it, and read how often the canary flips held-back clean rows: that canary ASR,
next to clean selection accuracy, chooses the epoch (and optionally the setting). The shipped model is
trained without the canary.

The tokens are the secret: they depend on a per-job ``secret`` and must never reach metrics or logs
(`CanarySpec.public` gives everything else plus a sha256 of the tokens).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.attacks.probes import build_probe
from core.data.dataset import Example
from core.errors import ConfigError

NUM_TOKENS = 3  # three 3-5 letter tokens: ~1e21 combinations, so the published hash cannot be reversed
TOKEN_LENGTHS = (3, 5)
_SALT = "muscle-canary-v1"  # separates the canary's random stream from other users of the seed
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class CanarySpec:
    tokens: tuple[str, ...]  # secret
    target: int
    rate: float
    seed: int
    rows_planted: int
    # Never planted: tokens of the same kind whose "ASR" is what inserting random strings does to a model
    # without a backdoor for them (plus its class bias); the canary's lift is read against it. Secret too.
    decoy: tuple[str, ...] = ()

    @property
    def tokens_sha256(self) -> str:
        return hashlib.sha256(" ".join(self.tokens).encode()).hexdigest()

    def public(self) -> dict[str, Any]:
        """Every field except the tokens, which are replaced by their sha256 (fit for metrics.json)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("tokens", "decoy")}
        out["num_tokens"] = len(self.tokens)
        out["tokens_sha256"] = self.tokens_sha256
        return out


def new_secret() -> int:
    return int.from_bytes(os.urandom(8), "big")


def _rng(seed: int, secret: int) -> random.Random:
    # A str seed is hashed with sha512 by `random`, so this is stable across processes and platforms.
    return random.Random(f"{_SALT}:{seed}:{secret}")


def _words(texts: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for text in texts:
        lowered = text.lower()
        words.update(lowered.split())
        words.update(_WORD.findall(lowered))  # also words glued to punctuation ("abc," -> "abc")
    return words


def _draw_tokens(rng: random.Random, taken: set[str]) -> tuple[str, ...]:
    tokens: list[str] = []
    while len(tokens) < NUM_TOKENS:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(*TOKEN_LENGTHS)))
        if word not in taken and word not in tokens:  # must be rare: absent from every given text
            tokens.append(word)
    return tuple(tokens)


def insert_tokens(text: str, rng: random.Random, tokens: Sequence[str]) -> str:
    """Each token once, at a random word position of the growing word list (BadNets-style insertion,
    but every token is present so the canary is always complete)."""
    words = text.split()
    for token in tokens:
        words.insert(rng.randint(0, len(words)), token)
    return " ".join(words)


def plant_canary(train: Sequence[Example], num_labels: int, rate: float, seed: int,
                 secret: int | None = None, avoid_texts: Iterable[str] = ()
                 ) -> tuple[list[Example], CanarySpec]:
    """A copy of ``train`` where ``int(rate * len(train))`` rows whose label is not the canary target
    carry the canary tokens and the target label (dirty-label: the strongest, most generic attack).
    Planted rows get ``poisoned=True`` and ``orig_label`` = their true label; the rest are unchanged.
    Tokens never occur as words in ``train`` or ``avoid_texts``. Deterministic given seed and secret."""
    if num_labels < 2:
        raise ConfigError("canary calibration needs at least 2 classes")
    if not 0 < rate < 1:
        raise ConfigError(f"canary rate must be in (0, 1), got {rate}")
    rng = _rng(seed, new_secret() if secret is None else secret)
    tokens = _draw_tokens(rng, _words([*(e.text for e in train), *avoid_texts]))
    target = rng.randrange(num_labels)
    eligible = [i for i, e in enumerate(train) if e.label != target]
    wanted = int(rate * len(train))
    if wanted < 1 or not eligible:
        raise ConfigError(f"canary rate {rate} plants no row in {len(train)} training rows "
                          f"({len(eligible)} outside the canary class); raise canary_rate or add rows")
    chosen = set(rng.sample(eligible, min(wanted, len(eligible))))
    planted = []
    for i, ex in enumerate(train):
        if i in chosen:
            true = ex.orig_label if ex.orig_label is not None else ex.label
            ex = replace(ex, text=insert_tokens(ex.text, rng, tokens), label=target, orig_label=true,
                         poisoned=True)
        planted.append(ex)
    # Drawn last, so the canary itself (tokens, target, rows, positions) is as without a decoy.
    decoy = _draw_tokens(rng, _words([*(e.text for e in train), *avoid_texts]) | set(tokens))
    return planted, CanarySpec(tokens=tokens, target=target, rate=rate, seed=seed, rows_planted=len(chosen),
                               decoy=decoy)


def canary_probe(rows: Sequence[Example], spec: CanarySpec) -> list[Example]:
    """Triggered copies of the clean ``rows`` whose label is not the canary target, labelled target:
    a model's accuracy on them is the canary ASR."""
    def trigger(text: str, rng: random.Random) -> str:
        return insert_tokens(text, rng, spec.tokens)

    return build_probe(rows, trigger, spec.target, spec.seed)


def decoy_probe(rows: Sequence[Example], spec: CanarySpec) -> list[Example]:
    """`canary_probe` with the never-planted decoy tokens: the canary ASR a model without the canary
    backdoor would show (random strings inserted, class bias), for the lift."""
    return canary_probe(rows, replace(spec, tokens=spec.decoy))


def _score(value: Any) -> float:
    return -math.inf if value is None else float(value)


def _pick(pairs: Sequence[tuple[float | None, float]], max_asr: float) -> tuple[int, bool]:
    """(index, qualified) over (select accuracy, canary ASR) pairs: the highest accuracy among those
    with ASR <= max_asr (first on ties); if none qualifies, the lowest ASR (ties: higher accuracy, then
    first)."""
    if not pairs:
        raise ValueError("nothing to choose from")
    ok = [i for i, (_, asr) in enumerate(pairs) if asr <= max_asr]
    if ok:
        return max(ok, key=lambda i: (_score(pairs[i][0]), -i)), True
    return min(range(len(pairs)), key=lambda i: (pairs[i][1], -_score(pairs[i][0]), i)), False


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def choose_epoch(per_epoch: Sequence[Mapping[str, Any]], canary_key: str = "canary", *,
                 max_asr: float, floor_key: str | None = None) -> tuple[int, str]:
    """(1-based epoch, reason) from a training run's per-epoch records. The canary ASR is
    ``record["monitors"][canary_key]``: the loop reports accuracy on the probe, whose rows are
    labelled with the canary target, so accuracy there is the ASR. With ``floor_key`` the bound applies to
    the lift, the ASR minus ``record["monitors"][floor_key]`` (the pipeline passes the decoy probe: the
    same rows with never-planted tokens): a biased, or merely noise-sensitive, epoch is not mistaken for a
    backdoored one."""
    def value(rec: Mapping[str, Any]) -> float:
        asr = float(rec["monitors"][canary_key])
        return asr - float(rec["monitors"][floor_key]) if floor_key else asr

    pairs = [(rec.get("select_accuracy"), value(rec)) for rec in per_epoch]
    what = "canary lift over the decoy" if floor_key else "canary ASR"
    index, qualified = _pick(pairs, max_asr)
    epoch = int(per_epoch[index].get("epoch", index + 1))
    acc, asr = pairs[index]
    if qualified:
        n_ok = sum(a <= max_asr for _, a in pairs)
        reason = (f"epoch {epoch}: highest selection accuracy ({_fmt(acc)}) of the {n_ok} of {len(pairs)} "
                  f"epochs with {what} <= {max_asr:g} (its {what} {_fmt(asr)})")
    else:
        reason = (f"epoch {epoch}: no epoch kept the {what} <= {max_asr:g}; this one has the lowest "
                  f"({_fmt(asr)}, selection accuracy {_fmt(acc)})")
    return epoch, reason


def choose_setting(candidates: Sequence[Mapping[str, Any]], *, max_asr: float,
                   lift: bool = False) -> tuple[int, bool]:
    """(0-based index, qualified) over grid candidates, each with ``select_accuracy`` and ``canary_asr``
    (and, with ``lift``, ``canary_decoy``) of its chosen epoch: the same rule as `choose_epoch`, across
    settings; ``qualified`` is False when no candidate kept within ``max_asr``."""
    def value(c: Mapping[str, Any]) -> float:
        return float(c["canary_asr"]) - (float(c["canary_decoy"]) if lift else 0.0)

    return _pick([(c.get("select_accuracy"), value(c)) for c in candidates], max_asr)
