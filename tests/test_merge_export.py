"""Export: the merged folder loads with plain transformers and reproduces the trained model's logits;
the adapter folder rebuilds the same model on top of the base checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from core.config import TrainConfig, resolve_config
from core.defenses.methods import (
    ADAPTER_JSON,
    ADAPTER_TENSORS,
    apply_defense,
    export_adapter,
    export_merged,
    load_exported_adapter,
)
from core.defenses.mslr import MultiScaleLowRankLinear
from core.models.backbones import load_backbone
from core.training.predict import predict_logits
from tests.tiny_models import TinyLabels

TEXTS = ["the good movie cf", "a bad film was really boring and dull", "great", "i watch this 3d movie",
         "tq the plot was superb"]




def _cfg(method: str, **kw: object) -> TrainConfig:
    return resolve_config("reference").model_copy(update={"method": method, **kw})


def _pretend_trained(model: nn.Module, seed: int = 0) -> None:
    """Move every trainable tensor away from its init (LoRA B is zero at init: merging must matter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def _trained(tiny, fam: str, method: str, num_labels: int = 2, **kw: object):  # type: ignore[no-untyped-def]
    model, tok = load_backbone(str(tiny(fam, num_labels)), TinyLabels(num_labels), seed=1)
    model = apply_defense(model, _cfg(method, **kw), fam)
    _pretend_trained(model)
    model.eval()
    return model, tok


@pytest.mark.parametrize("fam,method,num_labels", [
    ("bert", "muscle", 2),
    ("roberta", "muscle", 2),
    ("llama", "muscle", 2),
    ("distilbert", "muscle", 2),
    ("bert", "muscle-no-ms", 3),
    ("llama", "vanilla", 3),
    ("roberta", "lora", 2),
])
def test_merged_export_matches_trained_model(tiny, tmp_path: Path, fam: str, method: str,  # type: ignore[no-untyped-def]
                                             num_labels: int) -> None:
    model, tok = _trained(tiny, fam, method, num_labels, train_head=True)
    before = predict_logits(model, tok, TEXTS, batch_size=2, max_length=64)
    out = export_merged(model, tok, tmp_path / "model", fam)
    assert out == tmp_path / "model"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.py"))

    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    loaded_tok = AutoTokenizer.from_pretrained(out)
    assert not any(isinstance(m, MultiScaleLowRankLinear) for m in loaded.modules())
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    after = predict_logits(loaded, loaded_tok, TEXTS, batch_size=2, max_length=64)
    assert after.shape == (len(TEXTS), num_labels)
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
    # and the export left the trained model untouched
    again = predict_logits(model, tok, TEXTS, batch_size=2, max_length=64)
    assert torch.equal(before, again)


def test_llama_head_collapses_into_plain_score(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, tok = _trained(tiny, "llama", "muscle")
    export_merged(model, tok, tmp_path / "m", "llama")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert weights["score.weight"].shape == (2, 32)
    assert not any(k.startswith("score.") and k != "score.weight" for k in weights)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["pad_token_id"] == tok.pad_token_id


def test_mslr_merges_into_penultimate_linear(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, tok = _trained(tiny, "bert", "muscle")
    from core.models.backbones import unwrap

    mslr = unwrap(model).bert.pooler.dense
    expected = mslr.base.weight + mslr.delta_weight()
    export_merged(model, tok, tmp_path / "m", "bert")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    key = next(k for k in weights if k.endswith("pooler.dense.weight"))
    assert torch.allclose(weights[key], expected.detach(), atol=1e-6)


def test_unmergeable_methods_return_none(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for method in ("adapter", "prefix"):
        model, tok = _trained(tiny, "bert", method)
        assert export_merged(model, tok, tmp_path / method, "bert") is None
        assert not (tmp_path / method).exists()
    model, _ = _trained(tiny, "bert", "vanilla")
    assert export_adapter(model, tmp_path / "none") is None


@pytest.mark.parametrize("fam,method", [
    ("bert", "muscle"), ("roberta", "muscle"), ("llama", "muscle"), ("bert", "adapter"),
    ("bert", "prefix"), ("llama", "lora"),
])
def test_adapter_export_round_trip(tiny, tmp_path: Path, fam: str, method: str) -> None:  # type: ignore[no-untyped-def]
    model, tok = _trained(tiny, fam, method, prefix_tokens=3)
    before = predict_logits(model, tok, TEXTS, batch_size=8, max_length=64)
    out = export_adapter(model, tmp_path / "adapter")
    assert out is not None
    meta = json.loads((out / ADAPTER_JSON).read_text())
    assert meta["family"] == fam and meta["method"] == method
    tensors = load_file(str(out / ADAPTER_TENSORS))
    if method == "muscle":
        assert (out / "peft" / "adapter_model.safetensors").is_file()
        module = meta["mslr"][0]["module"]
        assert {f"{module}.L", f"{module}.R", f"{module}.K", f"{module}.base.weight"} <= set(tensors)
    rebuilt, rebuilt_tok = load_exported_adapter(out)
    after = predict_logits(rebuilt, rebuilt_tok, TEXTS, batch_size=8, max_length=64)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


@pytest.mark.parametrize("fam", ["bert", "roberta", "distilbert", "llama"])
@pytest.mark.parametrize("method", ["lora", "muscle", "muscle-no-ga", "muscle-no-ms"])
def test_the_adapter_is_a_standard_peft_adapter(tiny, tmp_path: Path, fam: str, method: str) -> None:  # type: ignore[no-untyped-def]
    """Base model + `PeftModel.from_pretrained(base, adapter)` gives the merged model's logits: LoRA as
    trained, the head and the MSLR layer as modules_to_save with their merged weights."""
    from peft import PeftModel

    model, tok = _trained(tiny, fam, method, num_labels=3)
    merged_dir = export_merged(model, tok, tmp_path / "model", fam)
    out = export_adapter(model, tmp_path / "adapter", base_name=str(tiny(fam, 3)))
    assert out is not None and (out / "adapter_config.json").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(tiny(fam, 3))
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    labels = {k: getattr(merged.config, k) for k in ("id2label", "label2id", "pad_token_id")}
    base = AutoModelForSequenceClassification.from_pretrained(tiny(fam, 3), **labels)
    loaded = PeftModel.from_pretrained(base, out).eval()
    want = predict_logits(merged, tok, TEXTS, batch_size=8, max_length=64)
    got = predict_logits(loaded, tok, TEXTS, batch_size=8, max_length=64)
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()
