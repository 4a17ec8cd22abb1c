"""The training loop: determinism, exact resume, cancellation, progress, selection, GA wiring,
plus batching and prediction helpers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

import core.training.loop as loop
from core.config import TrainConfig, resolve_config
from core.data.dataset import Example
from core.defenses.methods import apply_defense
from core.engine import ProgressEvent
from core.errors import ConfigError, JobCancelled
from core.models.backbones import load_backbone
from core.training.batching import collate, length_sorted_batches
from core.training.checkpoint_file import load_checkpoint
from core.training.predict import predict_logits
from tests.tiny_models import TinyLabels

POS = "good great fine nice wonderful excellent".split()
NEG = "bad awful poor boring dull terrible".split()
FILL = "the movie film story plot was and it is this".split()


def _rows(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.randint(0, 1)
        words = rng.sample(FILL, rng.randint(2, 6))
        words.insert(rng.randint(0, len(words)), rng.choice(POS if y else NEG))
        out.append(Example(" ".join(words), y))
    return out


TRAIN, AUX, SELECT, PROBE = _rows(32, 1), _rows(12, 2), _rows(10, 3), _rows(6, 4)




def _cfg(method: str = "muscle", **kw: Any) -> TrainConfig:
    base = {"method": method, "epochs": 3, "batch_size": 8, "aux_batch_size": 4, "lr": 1e-3,
            "eval_batch_size": 4, "max_length": 32, "device": "cpu"}
    return resolve_config("reference").model_copy(update={**base, **kw})


def _model(tiny, cfg: TrainConfig, fam: str = "bert", load_seed: int = 42):  # type: ignore[no-untyped-def]
    model, tok = load_backbone(str(tiny(fam)), TinyLabels(2), seed=load_seed)
    return apply_defense(model, cfg, fam), tok


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def _strip_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rec in history:
        rec = {k: v for k, v in rec.items() if k not in ("seconds", "eval_seconds")}
        if "ga" in rec:
            timing = ("align_share_of_step",)
            rec["ga"] = {k: v for k, v in rec["ga"].items() if "seconds" not in k and k not in timing}
        out.append(rec)
    return out


@pytest.mark.parametrize("fam,method,extra", [("bert", "muscle", {}), ("llama", "muscle", {}),
                                              ("roberta", "vanilla", {}),
                                              ("bert", "muscle", {"ga_ref_momentum": 0.9})])
def test_resume_after_kill_equals_uninterrupted_run(tiny, tmp_path: Path, fam: str, method: str,  # type: ignore[no-untyped-def]
                                                    extra: dict[str, Any]) -> None:
    cfg = _cfg(method, **extra)
    straight, tok = _model(tiny, cfg, fam)
    full = loop.train(straight, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "a",
                      monitors={"probe": PROBE})

    first, tok = _model(tiny, cfg, fam)
    steps_per_epoch = 4
    seen: list[int] = []

    def on_event(event: ProgressEvent) -> None:
        if event.kind == "step":
            seen.append(event.step or 0)

    with pytest.raises(JobCancelled):  # "killed" at the first step of epoch 2
        loop.train(first, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "b", progress=on_event,
                   should_cancel=lambda: len(seen) >= steps_per_epoch + 1, monitors={"probe": PROBE})
    assert seen[-1] == steps_per_epoch + 1

    # A fresh process: rebuilt model, even with another head seed (the checkpoint restores the head).
    resumed, tok = _model(tiny, cfg, fam, load_seed=7)
    epochs: list[tuple[int | None, bool]] = []
    rest = loop.train(resumed, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path / "b", resume=True,
                      monitors={"probe": PROBE},
                      progress=lambda e: epochs.append((e.epoch, e.replayed)) if e.kind == "epoch" else None)
    assert rest.resumed_from_epoch == 1
    # the checkpoint's epoch is reported again (the killed process may not have), then the new ones
    assert epochs == [(1, True)] + [(e, False) for e in range(2, cfg.epochs + 1)]
    assert rest.best_epoch == full.best_epoch
    assert _strip_times(rest.per_epoch) == _strip_times(full.per_epoch)
    assert _same(_state(resumed), _state(straight))
    last_a = load_checkpoint(tmp_path / "a" / loop.LAST)["model"]
    last_b = load_checkpoint(tmp_path / "b" / loop.LAST)["model"]
    assert _same(last_a, last_b)


def test_same_seed_same_result_other_seed_differs(tiny) -> None:  # type: ignore[no-untyped-def]
    def run(seed: int) -> dict[str, torch.Tensor]:
        cfg = _cfg("muscle", epochs=2, seed=seed)
        model, tok = _model(tiny, cfg)
        loop.train(model, tok, TRAIN, AUX, SELECT, cfg)
        return _state(model)

    a, b, c = run(1), run(1), run(2)
    assert _same(a, b)
    assert not _same(a, c)


def test_cancel_raises_within_one_step(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg("muscle")
    model, tok = _model(tiny, cfg)
    steps: list[int] = []
    flag = {"cancel": False}

    def on_event(event: ProgressEvent) -> None:
        if event.kind == "step":
            steps.append(event.step or 0)
            flag["cancel"] = True  # the user presses cancel during the first step

    with pytest.raises(JobCancelled):
        loop.train(model, tok, TRAIN, AUX, SELECT, cfg, progress=on_event,
                   should_cancel=lambda: flag["cancel"])
    assert steps == [1]


def test_progress_events_and_epoch_metrics(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg("muscle")
    model, tok = _model(tiny, cfg)
    events: list[ProgressEvent] = []
    out = loop.train(model, tok, TRAIN, AUX, SELECT, cfg, progress=events.append, monitors={"probe": PROBE})
    steps = [e for e in events if e.kind == "step"]
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.step for e in steps] == list(range(1, 13))
    assert all(e.total_steps == 12 and e.loss is not None and e.eta_seconds is not None for e in steps)
    assert [e.epoch for e in steps[:4]] == [1, 1, 1, 1] and steps[-1].epoch == 3
    assert all(e.eta_seconds >= 0 for e in steps)
    assert [e.epoch for e in epochs] == [1, 2, 3]
    rec = epochs[-1].metrics
    assert rec is not None and set(rec) >= {"epoch", "train_loss", "select_accuracy", "monitors", "ga"}
    assert set(rec["monitors"]) == {"probe"}
    ga = rec["ga"]
    assert ga["aligned_share"] + ga["mixed_share"] + ga["raw_share"] == pytest.approx(1.0)
    assert ga["align_seconds"] <= ga["step_seconds"]
    assert ga["raw_tensors_per_step"] == 0.0  # once trained, every tensor has a clean gradient to align to
    assert len(out.per_epoch) == 3 and out.per_epoch[-1] == rec


def test_best_epoch_first_on_ties_and_monitors_never_choose(tiny, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    select_scores = [0.5, 0.75, 0.75]
    monitor_scores = [0.1, 0.2, 0.99]

    def fake_accuracy(model, tokenizer, rows, **kwargs):  # type: ignore[no-untyped-def]
        return (select_scores if rows is SELECT else monitor_scores).pop(0)

    monkeypatch.setattr(loop, "accuracy_on", fake_accuracy)
    cfg = _cfg("muscle")
    model, tok = _model(tiny, cfg)
    out = loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path, monitors={"probe": PROBE})
    assert out.best_epoch == 2
    best = load_checkpoint(tmp_path / "best-epoch2.safetensors")["model"]
    last = load_checkpoint(tmp_path / loop.LAST)["model"]
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in best.items())  # best weights are loaded at the end
    assert any(not torch.equal(own[k], v) for k, v in last.items())
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch2.safetensors", "last.safetensors"]


def test_ga_runs_every_step_only_for_ga_methods(tiny, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    real = loop.apply_alignment

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "apply_alignment", spy)
    for method, expected in [("muscle", 12), ("ga-only", 12), ("muscle-no-ms", 12), ("lora", 0),
                             ("muscle-no-ga", 0)]:
        calls.clear()
        cfg = _cfg(method)
        model, tok = _model(tiny, cfg)
        out = loop.train(model, tok, TRAIN, AUX, SELECT, cfg)
        assert len(calls) == expected, method
        assert ("ga" in out.per_epoch[0]) == (expected > 0)


def test_moving_average_of_clean_gradients() -> None:
    first = [torch.tensor([1.0, 2.0]), None]
    avg = loop.moving_average(None, first, 0.9)
    assert torch.equal(avg[0], first[0]) and avg[0] is not first[0] and avg[1] is None
    avg = loop.moving_average(avg, [torch.tensor([11.0, 2.0]), torch.tensor([3.0])], 0.9)
    assert torch.allclose(avg[0], torch.tensor([2.0, 2.0]))  # 0.9 * 1 + 0.1 * 11
    assert torch.equal(avg[1], torch.tensor([3.0]))  # first gradient of that tensor: copied
    avg = loop.moving_average(avg, [None, torch.tensor([13.0])], 0.5)
    assert torch.allclose(avg[0], torch.tensor([2.0, 2.0])) and torch.allclose(avg[1], torch.tensor([8.0]))


def test_reference_momentum_changes_the_aligned_steps(tiny) -> None:  # type: ignore[no-untyped-def]
    plain = _cfg("muscle", ga_gate_loss=None)
    averaged = plain.model_copy(update={"ga_ref_momentum": 0.9})
    a, tok = _model(tiny, plain)
    loop.train(a, tok, TRAIN, AUX, SELECT, plain)
    b, tok = _model(tiny, averaged)
    loop.train(b, tok, TRAIN, AUX, SELECT, averaged)
    assert not _same(_state(a), _state(b))


def test_ga_reference_kept_aligns_to_the_training_rows(tiny) -> None:  # type: ignore[no-untyped-def]
    on_aux = _cfg("muscle", ga_gate_loss=None)
    on_kept = on_aux.model_copy(update={"ga_reference": "kept"})

    def trained(cfg: TrainConfig, reference: list[Example]) -> dict[str, torch.Tensor]:
        model, tok = _model(tiny, cfg)
        loop.train(model, tok, TRAIN, reference, SELECT, cfg)
        return _state(model)

    kept = trained(on_kept, AUX)  # the aux rows given are not the reference
    assert _same(kept, trained(on_aux, TRAIN))
    assert not _same(kept, trained(on_aux, AUX))


def test_zero_gradients_at_the_start_are_not_counted_as_leaks(tiny) -> None:  # type: ignore[no-untyped-def]
    # default profile: LoRA B and MSLR R start at zero, so at step 1 LoRA A and MSLR L have zero g and
    # g_c. Alignment leaves them raw, but nothing passes; the leak counter must stay 0 from epoch 1.
    cfg = resolve_config("default").model_copy(update={
        "method": "muscle", "epochs": 2, "batch_size": 8, "aux_batch_size": 4, "eval_batch_size": 4,
        "max_length": 32, "device": "cpu"})
    model, tok = _model(tiny, cfg)
    hist = loop.train(model, tok, TRAIN, AUX, SELECT, cfg).per_epoch
    assert [rec["ga"]["raw_tensors_per_step"] for rec in hist] == [0.0, 0.0]


def test_idle_share_counts_steps_whose_gradients_alignment_zeroed(tiny) -> None:  # type: ignore[no-untyped-def]
    # A clean-gradient threshold no tensor reaches drops every gradient (ga_no_direction=skip, mu 0):
    # from the first step nothing moves, as once the pooler saturates on the aux rows (efficacy finding 8).
    base = resolve_config("default").model_copy(update={
        "method": "muscle", "epochs": 2, "batch_size": 8, "aux_batch_size": 4, "eval_batch_size": 4,
        "max_length": 32, "device": "cpu", "ga_min_ref_grad_norm": 1e9})
    model, tok = _model(tiny, base)
    start = _state(model)
    hist = loop.train(model, tok, TRAIN, AUX, SELECT, base).per_epoch
    assert [r["ga"]["idle_share"] for r in hist] == [1.0, 1.0] and _same(_state(model), start)
    # mu > 0 keeps a share of the dropped gradients, and the authors' keep_raw aligns or keeps them: never idle
    for moving in ({"mu_max": 0.5, "mu_start_epoch": 0}, {"ga_no_direction": "keep_raw", "ga_min_ref_grad_norm": 5e-7}):
        cfg = base.model_copy(update={**moving, "fixed_epoch": 2})  # ship the last epoch, not the best
        model, tok = _model(tiny, cfg)
        hist = loop.train(model, tok, TRAIN, AUX, SELECT, cfg).per_epoch
        assert hist[-1]["ga"]["idle_share"] == 0.0 and not _same(_state(model), start), moving


def test_gate_shares(tiny) -> None:  # type: ignore[no-untyped-def]
    closed = _cfg("muscle", ga_gate_loss=100.0)  # never open: epoch 0 raw, then Eq. 8 with mu_e
    model, tok = _model(tiny, closed)
    hist = loop.train(model, tok, TRAIN, AUX, SELECT, closed).per_epoch
    assert hist[0]["ga"]["raw_share"] == 1.0
    assert hist[1]["ga"]["mixed_share"] == 1.0 and hist[1]["ga"]["mu"] == 0.0
    assert hist[2]["ga"]["mu"] == pytest.approx(0.1 * 1 / 2)
    always = _cfg("muscle", ga_gate_loss=0.0)
    model, tok = _model(tiny, always)
    hist = loop.train(model, tok, TRAIN, AUX, SELECT, always).per_epoch
    assert all(rec["ga"]["aligned_share"] == 1.0 for rec in hist)


def test_vanilla_learns_a_separable_task(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg("vanilla", epochs=15, batch_size=16, lr=3e-3)
    model, tok = _model(tiny, cfg)
    train_rows, select_rows = _rows(64, 11), _rows(32, 12)
    out = loop.train(model, tok, train_rows, [], select_rows, cfg)
    assert out.per_epoch[-1]["train_loss"] < out.per_epoch[0]["train_loss"]
    assert out.per_epoch[out.best_epoch - 1]["select_accuracy"] >= 0.9


def test_resume_refuses_changed_settings_and_data(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg("lora", epochs=1)
    model, tok = _model(tiny, cfg)
    loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path)
    other = cfg.model_copy(update={"lr": 5e-4})
    model, tok = _model(tiny, other)
    with pytest.raises(ConfigError, match="lr"):
        loop.train(model, tok, TRAIN, AUX, SELECT, other, ckpt_dir=tmp_path, resume=True)
    model, tok = _model(tiny, cfg)
    with pytest.raises(ConfigError, match="data"):
        loop.train(model, tok, TRAIN[:-1], AUX, SELECT, cfg, ckpt_dir=tmp_path, resume=True)
    # a finished run resumes to the same outcome without training again
    model, tok = _model(tiny, cfg)
    events: list[ProgressEvent] = []
    out = loop.train(model, tok, TRAIN, AUX, SELECT, cfg, ckpt_dir=tmp_path, resume=True,
                     progress=events.append)
    assert out.resumed_from_epoch == 1 and out.best_epoch == 1
    assert [(e.kind, e.epoch, e.replayed) for e in events] == [("epoch", 1, True)]  # reported again, not trained


def test_input_errors(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg("muscle")
    model, tok = _model(tiny, cfg)
    with pytest.raises(ConfigError, match="aux"):
        loop.train(model, tok, TRAIN, [], SELECT, cfg)
    with pytest.raises(ConfigError, match="label"):
        loop.train(model, tok, [Example("good", 5)], AUX, SELECT, cfg)


def test_collate_pads_per_batch_on_either_side() -> None:
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}, {"input_ids": [8], "attention_mask": [1]}]
    right = collate(rows, pad_id=0)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = collate(rows, pad_id=9, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert length_sorted_batches([1, 5, 3, 5], 2) == [[1, 3], [2, 0]]


@pytest.mark.parametrize("fam", ["bert", "llama"])
def test_predict_logits_keeps_input_order_and_ignores_padding(tiny, fam: str) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg("muscle")
    model, tok = _model(tiny, cfg, fam)
    texts = [r.text for r in _rows(9, 5)] + ["good"]
    batched = predict_logits(model, tok, texts, batch_size=4, max_length=32)
    single = torch.cat([predict_logits(model, tok, [t], batch_size=1, max_length=32) for t in texts])
    assert batched.shape == (10, 2)
    assert torch.allclose(batched, single, atol=1e-5)
    assert model.training  # mode restored (apply_defense leaves the model in train mode)
    assert predict_logits(model, tok, [], batch_size=4).shape == (0, 2)


def test_resume_check_ignores_settings_newer_than_the_checkpoint_at_their_default() -> None:
    from core.training.loop import _diff

    saved = {"lr": 1e-3, "epochs": 3}
    assert _diff(saved, {"lr": 1e-3, "epochs": 3, "new_knob": 0}, {"new_knob": 0}) == []
    assert _diff(saved, {"lr": 1e-3, "epochs": 3, "new_knob": 5}, {"new_knob": 0}) == ["new_knob"]
    assert _diff(saved, {"lr": 2e-3, "epochs": 3}, {}) == ["lr"]
