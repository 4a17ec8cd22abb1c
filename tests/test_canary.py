"""Canary calibration: planting, probe, epoch/setting choice, fixed_epoch in the loop, one tiny run."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

import core.training.loop as loop
from core.canary_run import (
    _chance_warning,
    calibrate_with_canary,
    grid_candidates,
    majority_share,
    maybe_calibrate,
)
from core.config import TrainConfig, resolve_config
from core.data.dataset import Example
from core.data.labels import LabelMap
from core.defenses.canary import canary_probe, choose_epoch, choose_setting, decoy_probe, plant_canary
from core.defenses.methods import apply_defense
from core.engine import ProgressEvent
from core.errors import ConfigError, JobCancelled
from core.models.backbones import load_backbone
from core.prepared import PreparedData
from tests.tiny_models import TinyLabels, make_tiny_model, shared_root

POS = "good great fine nice wonderful excellent".split()
NEG = "bad awful poor boring dull terrible".split()
FILL = "the movie film story plot was and it is this".split()
SECRET = 20240611


def _rows(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = i % 2
        words = rng.sample(FILL, rng.randint(2, 6))
        words.insert(rng.randint(0, len(words)), rng.choice(POS if y else NEG))
        out.append(Example(" ".join(words), y, line=i + 2))
    return out



@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model("bert", shared_root(tmp_path_factory))


def _cfg(**kw: Any) -> TrainConfig:
    base = {"method": "muscle", "epochs": 3, "batch_size": 8, "aux_batch_size": 4, "lr": 1e-3,
            "eval_batch_size": 8, "max_length": 32, "device": "cpu"}
    return resolve_config("reference").model_copy(update={**base, **kw})


def _model(tiny: Path, cfg: TrainConfig) -> tuple[torch.nn.Module, Any]:
    model, tok = load_backbone(str(tiny), TinyLabels(2), seed=cfg.seed)
    return apply_defense(model, cfg, "bert"), tok


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------
# Planting and probe


def test_plant_canary_counts_labels_and_tokens() -> None:
    train = _rows(40, 1)
    planted, spec = plant_canary(train, 2, 0.1, seed=7, secret=SECRET)
    assert len(planted) == len(train)
    changed = [(a, b) for a, b in zip(train, planted, strict=True) if a != b]
    assert len(changed) == spec.rows_planted == 4
    clean_words = {w for e in train for w in e.text.split()}
    assert 2 <= len(spec.tokens) <= 3 and len(set(spec.tokens)) == len(spec.tokens)
    for token in spec.tokens:
        assert token.isalpha() and token.islower() and 3 <= len(token) <= 5
        assert token not in clean_words
    for before, after in changed:
        assert before.label != spec.target and after.label == spec.target
        assert after.orig_label == before.label and after.poisoned is True
        words = after.text.split()
        assert all(words.count(t) == 1 for t in spec.tokens)
        assert [w for w in words if w not in spec.tokens] == before.text.split()  # only insertions
    # deterministic per (seed, secret); another secret gives another canary
    assert plant_canary(train, 2, 0.1, seed=7, secret=SECRET) == (planted, spec)
    assert plant_canary(train, 2, 0.1, seed=7, secret=SECRET + 1)[1].tokens != spec.tokens
    assert spec.tokens_sha256 == hashlib.sha256(" ".join(spec.tokens).encode()).hexdigest()
    assert "tokens" not in spec.public() and set(spec.tokens).isdisjoint(map(str, spec.public().values()))
    # The decoy: same kind of tokens, never planted, absent from the data and from the canary, secret too.
    assert len(spec.decoy) == len(spec.tokens) and set(spec.decoy).isdisjoint(spec.tokens)
    assert all(t.isalpha() and t not in clean_words for t in spec.decoy)
    assert not any(t in after.text.split() for _, after in changed for t in spec.decoy)
    assert "decoy" not in spec.public() and set(spec.decoy).isdisjoint(map(str, spec.public().values()))


def test_decoy_probe_is_the_canary_probe_with_the_decoy_tokens() -> None:
    _, spec = plant_canary(_rows(40, 1), 2, 0.1, seed=7, secret=SECRET)
    rows = _rows(10, 3)
    canary, decoy = canary_probe(rows, spec), decoy_probe(rows, spec)
    assert [e.line for e in canary] == [e.line for e in decoy] and all(e.label == spec.target for e in decoy)
    for c, d in zip(canary, decoy, strict=True):
        assert all(t in d.text.split() for t in spec.decoy) and not any(t in d.text.split() for t in spec.tokens)
        assert [w for w in c.text.split() if w not in spec.tokens] == [w for w in d.text.split()
                                                                        if w not in spec.decoy]


def test_plant_canary_avoids_words_of_the_data() -> None:
    train = _rows(20, 2)
    _, first = plant_canary(train, 3, 0.2, seed=1, secret=SECRET)
    # Put the tokens the same draw would pick into the data: they must be drawn again.
    seeded = [*train, Example(" ".join(first.tokens), 0)]
    _, second = plant_canary(seeded, 3, 0.2, seed=1, secret=SECRET)
    assert set(second.tokens).isdisjoint(first.tokens)
    _, third = plant_canary(train, 3, 0.2, seed=1, secret=SECRET, avoid_texts=[f"x,{first.tokens[0]}!"])
    assert first.tokens[0] not in third.tokens


def test_plant_canary_refuses_a_rate_that_plants_nothing() -> None:
    with pytest.raises(ConfigError, match="plants no row"):
        plant_canary(_rows(5, 3), 2, 0.1, seed=1, secret=SECRET)


def test_canary_probe_excludes_target_rows() -> None:
    _, spec = plant_canary(_rows(40, 1), 2, 0.1, seed=7, secret=SECRET)
    held = _rows(9, 4)
    probe = canary_probe(held, spec)
    others = [e for e in held if e.label != spec.target]
    assert 0 < len(probe) == len(others) < len(held)
    for row, src in zip(probe, others, strict=True):
        assert row.label == spec.target and row.orig_label == src.label != spec.target
        assert all(t in row.text.split() for t in spec.tokens)


# ----------------------------------------------------------------------------------------------------
# Choice rules


def _epochs(pairs: list[tuple[float | None, float]]) -> list[dict[str, Any]]:
    return [{"epoch": i + 1, "select_accuracy": acc, "monitors": {"canary": asr, "other": 0.0}}
            for i, (acc, asr) in enumerate(pairs)]


def test_choose_epoch_highest_accuracy_within_the_limit_first_on_ties() -> None:
    per_epoch = _epochs([(0.6, 0.1), (0.9, 0.5), (0.7, 0.2), (0.7, 0.15)])
    epoch, reason = choose_epoch(per_epoch, max_asr=0.2)
    assert epoch == 3  # 0.9 is over the limit; 0.2 <= 0.2 qualifies; epoch 3 and 4 tie: first wins
    assert "epoch 3" in reason and "3 of 4" in reason
    assert choose_epoch(per_epoch, max_asr=0.12)[0] == 1
    assert choose_epoch(per_epoch, max_asr=1.0)[0] == 2
    # another monitor key
    assert choose_epoch(_epochs([(0.5, 0.0), (0.8, 0.0)]), "other", max_asr=0.0)[0] == 2


def test_choose_epoch_when_none_qualifies_takes_the_lowest_asr() -> None:
    per_epoch = _epochs([(0.9, 0.6), (0.5, 0.3), (0.7, 0.3), (0.7, 0.3)])
    epoch, reason = choose_epoch(per_epoch, max_asr=0.2)
    assert epoch == 3  # lowest ASR 0.3 at epochs 2-4; the higher accuracy wins, then the first
    assert "no epoch" in reason
    # no selection accuracy (empty select): ASR decides, accuracy never crashes the comparison
    assert choose_epoch(_epochs([(None, 0.4), (None, 0.1)]), max_asr=0.2)[0] == 2


def test_choose_epoch_on_lift_reads_asr_against_its_floor() -> None:
    per_epoch = [{"epoch": i + 1, "select_accuracy": acc, "monitors": {"canary": asr, "floor": floor}}
                 for i, (acc, asr, floor) in enumerate([(0.8, 0.3, 0.25), (0.7, 0.15, 0.1), (0.9, 0.5, 0.1)])]
    epoch, reason = choose_epoch(per_epoch, max_asr=0.2, floor_key="floor")
    assert epoch == 1 and "lift" in reason  # lifts 0.05, 0.05, 0.4: epoch 1 is biased, not backdoored
    assert choose_epoch(per_epoch, max_asr=0.2)[0] == 2  # on the raw ASR only epoch 2 qualifies
    cands = [{"select_accuracy": 0.8, "canary_asr": 0.3, "canary_decoy": 0.25},
             {"select_accuracy": 0.7, "canary_asr": 0.15, "canary_decoy": 0.1}]
    assert choose_setting(cands, max_asr=0.2, lift=True) == (0, True)
    assert choose_setting(cands, max_asr=0.2) == (1, True)


def test_choose_setting_same_rule() -> None:
    cands = [{"select_accuracy": 0.9, "canary_asr": 0.5}, {"select_accuracy": 0.7, "canary_asr": 0.1},
             {"select_accuracy": 0.8, "canary_asr": 0.2}, {"select_accuracy": 0.8, "canary_asr": 0.0}]
    assert choose_setting(cands, max_asr=0.2) == (2, True)
    assert choose_setting(cands, max_asr=0.05) == (3, True)
    assert choose_setting(cands[:1] + [{"select_accuracy": 0.95, "canary_asr": 0.5}], max_asr=0.2) == (1, False)


def test_grid_candidates_validate() -> None:
    cfg = _cfg(canary=True, canary_grid={"lr": [1e-3, 2e-3], "mu_max": [0.0, 0.05, 0.1]})
    cands = grid_candidates(cfg)
    assert len(cands) == 6 and cands[1][0] == {"lr": 1e-3, "mu_max": 0.05}
    assert cands[5][1].lr == 2e-3 and cands[5][1].mu_max == 0.1
    assert grid_candidates(_cfg())[0] == ({}, _cfg())
    for grid, match in [({"nope": [1]}, "unknown"), ({"fixed_epoch": [1]}, "cannot vary"),
                        ({"lr": []}, "non-empty"), ({"lr": [-1.0]}, "not a valid")]:
        with pytest.raises(ConfigError, match=match):
            grid_candidates(_cfg(canary_grid=grid))


# ----------------------------------------------------------------------------------------------------
# fixed_epoch in the training loop

TRAIN, AUX, SELECT = _rows(32, 11), _rows(12, 12), _rows(10, 13)


def test_fixed_epoch_equals_that_epoch_of_the_full_run(tiny: Path, tmp_path: Path) -> None:
    full_cfg = _cfg()
    model, tok = _model(tiny, full_cfg)
    keys = loop.state_keys(model)
    at_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def grab(event: ProgressEvent) -> None:
        if event.kind == "epoch":
            at_epoch[event.epoch or 0] = loop.snapshot(model, keys)

    full = loop.train(model, tok, TRAIN, AUX, SELECT, full_cfg, progress=grab)
    assert len(full.per_epoch) == 3

    fixed_cfg = _cfg(fixed_epoch=1)
    model, tok = _model(tiny, fixed_cfg)
    events: list[ProgressEvent] = []
    out = loop.train(model, tok, TRAIN, AUX, SELECT, fixed_cfg, ckpt_dir=tmp_path, progress=events.append)
    assert out.best_epoch == 1 and len(out.per_epoch) == 1  # stopped early
    assert _same(loop.snapshot(model, keys), at_epoch[1])
    assert out.per_epoch[0]["lr"] == full.per_epoch[0]["lr"]  # the 3-epoch schedule, not a 1-epoch one
    assert {e.total_steps for e in events if e.kind == "step"} == {4}
    # A 1-epoch run decays the LR to 0 within its epoch: other weights (the schedule matters).
    short_cfg = _cfg(epochs=1)
    model, tok = _model(tiny, short_cfg)
    loop.train(model, tok, TRAIN, AUX, SELECT, short_cfg)
    assert not _same(loop.snapshot(model, keys), at_epoch[1])


def test_fixed_epoch_overrides_selection_and_resumes(tiny: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(fixed_epoch=2)
    model, tok = _model(tiny, cfg)
    straight = loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "a")
    assert straight.best_epoch == 2 and len(straight.per_epoch) == 2
    want = loop.snapshot(model, loop.state_keys(model))

    model, tok = _model(tiny, cfg)
    steps: list[int] = []
    with pytest.raises(JobCancelled):  # killed at the first step of epoch 2 (no "best" file yet)
        loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "b",
                   progress=lambda e: steps.append(1) if e.kind == "step" else None,
                   should_cancel=lambda: len(steps) >= 5)
    assert not list((tmp_path / "b").glob("best-epoch*.safetensors"))
    model, tok = _model(tiny, cfg)
    rest = loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "b", resume=True)
    assert rest.resumed_from_epoch == 1 and rest.best_epoch == 2
    assert _same(loop.snapshot(model, loop.state_keys(model)), want)

    # the epoch is fixed even when selection accuracy says otherwise
    scores = [0.9, 0.1]
    monkeypatch.setattr(loop, "accuracy_on", lambda *a, **k: scores.pop(0))
    model, tok = _model(tiny, cfg)
    assert loop.train(model, tok, TRAIN, AUX, SELECT, cfg).best_epoch == 2
    with pytest.raises(ConfigError, match="fixed_epoch"):
        loop.train(model, tok, TRAIN, AUX, SELECT, _cfg(fixed_epoch=4))


# ----------------------------------------------------------------------------------------------------
# End to end on a tiny BERT


def _data(probes: dict[str, list[Example]] | None = None) -> PreparedData:
    label_map = LabelMap.from_labels(["0", "1"])
    return PreparedData(label_map, 1, _rows(24, 21), _rows(8, 22), _rows(8, 23), _rows(8, 24), probes or {},
                        {"select": "test", "cacc": "test"})


def _attack_probe() -> list[Example]:
    """A job's own attack probe: negative rows with a rare word, labelled with the target (1)."""
    return [Example(f"cf {e.text}", 1, line=e.line, orig_label=0, poisoned=True) for e in _rows(8, 25)
            if e.label == 0]


def test_calibrate_with_canary_end_to_end(tiny: Path, tmp_path: Path) -> None:
    data = _data({"badnets": _attack_probe()})
    cfg = _cfg(epochs=2, canary=True, canary_rate=0.2, canary_max_asr=0.5,
               canary_grid={"lr": [1e-3, 3e-3]}, screen=True)
    built: list[TrainConfig] = []

    def factory(candidate: TrainConfig) -> torch.nn.Module:
        built.append(candidate)
        return _model(tiny, candidate)[0]

    _, tok = load_backbone(str(tiny), TinyLabels(2), seed=cfg.seed)
    events: list[ProgressEvent] = []
    report = calibrate_with_canary(factory, tok, data, cfg, tmp_path, progress=events.append,
                                   secret=SECRET)
    _, spec = plant_canary(data.train, 2, 0.2, cfg.seed, secret=SECRET,
                           avoid_texts=[e.text for e in (*data.aux, *data.select)])

    assert [c.lr for c in built] == [1e-3, 3e-3] and all(c.fixed_epoch is None for c in built)
    assert len(report.candidates) == 2 and all(len(c["per_epoch"]) == 2 for c in report.candidates)
    best = report.candidates[report.chosen]
    assert report.config.fixed_epoch == report.epoch == best["epoch"] in (1, 2)
    assert report.config.lr == best["settings"]["lr"]
    assert report.canary_asr == best["canary_asr"]
    assert report.canary_asr == best["per_epoch"][report.epoch - 1]["canary_asr"]
    assert report.chosen == choose_setting(report.candidates, max_asr=0.5, lift=True)[0]  # lift: the default
    assert report.probe_rows == sum(e.label != spec.target for e in data.select)

    public = report.to_dict()
    assert public["canary_asr"] == report.canary_asr and public["tokens_sha256"] == spec.tokens_sha256
    assert public["rows_planted"] == 4 and public["target"] == spec.target
    lo, hi = public["canary_asr_ci95"]
    assert lo <= report.canary_asr <= hi and hi - lo > 0.3  # 4 probe rows: a wide interval
    assert public["canary_floor"] == best["canary_floor"]
    # the screen ran on the planted copy: 4 canary rows are too few for its tests (at least 5 rows)
    assert public["screen"] == {"canary_rows": 4, "canary_rows_removed": 0, "found": False,
                                "other_rows_removed": 0}
    # The job's own probe is read beside the canary in every epoch (how well the canary tracks it).
    assert all(set(r["probe_asr"]) == {"badnets"} for c in report.candidates for r in c["per_epoch"])
    assert all(r["probe_asr"]["badnets"] in (0, 0.25, 0.5, 0.75, 1.0) for r in best["per_epoch"])  # 4 rows
    assert best["probe_asr"] == best["per_epoch"][report.epoch - 1]["probe_asr"]
    assert public["chance_accuracy"] == 0.5  # the 8 selection rows alternate labels
    assert ("warning" in public) == (best["select_accuracy"] <= 0.52)
    text = json.dumps(public) + json.dumps([(e.message, e.metrics) for e in events], default=str)
    assert not any(t in text for t in (*spec.tokens, *spec.decoy))  # secrets never reach metrics or logs
    assert public["canary_decoy_asr"] == best["canary_decoy"] == best["per_epoch"][report.epoch - 1]["canary_decoy"]
    assert sum(e.kind == "log" and "candidate" in (e.message or "") for e in events) >= 2
    assert not any(e.kind == "epoch" for e in events)  # candidates' epochs are logs, not job epochs
    # Nothing that carries or rebuilds the canary outlives the calibration.
    assert sorted(p.name for p in (tmp_path / "canary").iterdir()) == ["report.json"]

    # A resumed job reuses the report without training.
    def no_training(candidate: TrainConfig) -> torch.nn.Module:
        raise AssertionError("calibration ran again")

    again = calibrate_with_canary(no_training, tok, data, cfg, tmp_path, resume=True)
    assert again.to_dict() == public and again.config == report.config
    with pytest.raises(ConfigError, match="changed"):
        calibrate_with_canary(no_training, tok, data, cfg.model_copy(update={"canary_rate": 0.3}),
                              tmp_path, resume=True)


def test_chance_warning_only_at_chance() -> None:
    assert majority_share(_rows(8, 1)) == 0.5 and majority_share([]) is None
    assert majority_share(_rows(3, 1)) == pytest.approx(2 / 3)
    assert "did not learn" in _chance_warning(0.51, 0.5)["warning"]
    assert _chance_warning(0.53, 0.5) == {} and _chance_warning(None, 0.5) == {}


def test_maybe_calibrate_is_a_no_op_without_canary(tmp_path: Path) -> None:
    cfg = _cfg()
    assert maybe_calibrate(cfg, _data(), "unused", "bert", None, tmp_path) == (cfg, None)
    assert not (tmp_path / "canary").exists()


def test_the_canary_measures_the_screen() -> None:
    from core.canary_run import screen_finds_canary
    from tests.test_screen import corpus

    rows = corpus(2000)
    label_map = LabelMap.from_labels(["0", "1"])
    data = PreparedData(label_map, 1, rows, corpus(100, seed=9), [], corpus(50, seed=8), {},
                        {"select": "test", "cacc": "test"})
    planted, spec = plant_canary(rows, 2, 0.05, 42, secret=SECRET)
    found = screen_finds_canary(planted, data, _cfg(screen=True))
    assert found == {"canary_rows": spec.rows_planted, "canary_rows_removed": spec.rows_planted, "found": True,
                     "other_rows_removed": 0}
    assert screen_finds_canary(planted, data, _cfg(screen=False)) is None
