"""Backbone loading, family detection and what each method trains."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from core.config import METHODS, TrainConfig, resolve_config
from core.defenses.adapter import BottleneckAdapter
from core.defenses.methods import apply_defense, defense_info
from core.defenses.mslr import MultiScaleLowRankLinear
from core.errors import ConfigError
from core.models.backbones import effective_max_length, family, load_backbone, unwrap
from core.models.heads import LlamaClassificationHead, head_modules, penultimate_linear
from core.training.batching import model_input_names
from tests.tiny_models import TinyLabels


def _cfg(method: str, **kw: object) -> TrainConfig:
    return resolve_config("reference").model_copy(update={"method": method, **kw})


def _build(tiny, fam: str, method: str, **kw: object) -> nn.Module:  # type: ignore[no-untyped-def]
    model, _ = load_backbone(str(tiny(fam)), TinyLabels(2), seed=42)
    return apply_defense(model, _cfg(method, **kw), fam)


def _kind(name: str) -> str:
    if "lora_" in name:
        return "lora"
    if "prompt_encoder" in name:
        return "prefix"
    if ".down." in name or ".up." in name:
        return "adapter"
    if name.endswith((".L", ".R")):
        return "mslr"
    return "other:" + name.split(".")[-2] if "." in name else name


def _trainable(model: nn.Module) -> Counter[str]:
    return Counter(_kind(n) for n, p in model.named_parameters() if p.requires_grad)


def _forward(model: nn.Module, tok, texts: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    enc = tok(texts, padding=True, return_tensors="pt")
    keep = model_input_names(model)
    return model(**{k: v for k, v in enc.items() if k in keep}).logits


@pytest.mark.parametrize("method,expected", [
    ("muscle", {"lora": 8, "mslr": 2}),
    ("muscle-no-ga", {"lora": 8, "mslr": 2}),
    ("muscle-no-ms", {"lora": 8}),
    ("lora", {"lora": 8}),
    ("adapter", {"adapter": 8}),
    ("prefix", {"prefix": 1}),
])
def test_bert_trainable_sets(tiny, method: str, expected: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    model = _build(tiny, "bert", method)
    assert dict(_trainable(model)) == expected
    assert defense_info(model).method == method


@pytest.mark.parametrize("method", ["vanilla", "ga-only"])
def test_full_fine_tuning_trains_everything(tiny, method: str) -> None:  # type: ignore[no-untyped-def]
    for fam in ("bert", "llama"):
        model = _build(tiny, fam, method)
        assert all(p.requires_grad for p in model.parameters())
        names = {n for n, _ in model.named_parameters()}
        assert any(n.startswith(("classifier", "score")) for n in names)
        assert not any(isinstance(m, MultiScaleLowRankLinear) for m in model.modules())


def test_muscle_freezes_random_head_and_pooler(tiny) -> None:  # type: ignore[no-untyped-def]
    model = _build(tiny, "bert", "muscle")
    base = unwrap(model)
    assert isinstance(base.bert.pooler.dense, MultiScaleLowRankLinear)
    assert not any(p.requires_grad for p in base.classifier.parameters())
    assert not any(p.requires_grad for p in base.bert.pooler.dense.base.parameters())
    assert not base.bert.embeddings.word_embeddings.weight.requires_grad
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert all(".query." in n or ".value." in n for n in lora_names)  # Q and V only, every layer
    assert {n.split("layer.")[1].split(".")[0] for n in lora_names} == {"0", "1"}


def test_train_head_switch(tiny) -> None:  # type: ignore[no-untyped-def]
    bert = unwrap(_build(tiny, "bert", "muscle", train_head=True))
    assert all(p.requires_grad for p in bert.classifier.parameters())
    roberta = unwrap(_build(tiny, "roberta", "muscle", train_head=True))
    assert all(p.requires_grad for p in roberta.classifier.out_proj.parameters())
    assert not any(p.requires_grad for p in roberta.classifier.dense.base.parameters())  # MSLR W0
    assert roberta.classifier.dense.L.requires_grad
    prefix = unwrap(_build(tiny, "bert", "prefix", train_head=True))
    assert all(p.requires_grad for p in prefix.classifier.parameters())


@pytest.mark.parametrize("fam,penultimate,frozen_head", [
    ("roberta", "classifier.dense", "classifier.out_proj"),
    ("distilbert", "pre_classifier", "classifier"),
    ("llama", "score.dense", "score.out_proj"),
])
def test_muscle_per_family(tiny, fam: str, penultimate: str, frozen_head: str) -> None:  # type: ignore[no-untyped-def]
    model = _build(tiny, fam, "muscle")
    base = unwrap(model)
    assert isinstance(base.get_submodule(penultimate), MultiScaleLowRankLinear)
    assert not any(p.requires_grad for p in base.get_submodule(frozen_head).parameters())
    counts = _trainable(model)
    assert counts == Counter({"lora": 8, "mslr": 2})
    targets = {"roberta": ("query", "value"), "distilbert": ("q_lin", "v_lin"), "llama": ("q_proj", "v_proj")}
    lora = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert all(any(f".{t}." in n for t in targets[fam]) for n in lora)


def test_lora_settings_are_honoured(tiny) -> None:  # type: ignore[no-untyped-def]
    model = _build(tiny, "bert", "lora", lora_r=4, lora_alpha=8, lora_dropout=0.1, lora_targets=["query"])
    q = unwrap(model).bert.encoder.layer[0].attention.self.query
    assert q.lora_A["default"].weight.shape[0] == 4
    assert q.scaling["default"] == pytest.approx(2.0)
    assert q.lora_dropout["default"].p == pytest.approx(0.1)
    assert _trainable(model) == Counter({"lora": 4})  # query only
    with pytest.raises(ConfigError):
        _build(tiny, "bert", "lora", lora_targets=["no_such_layer"])


def test_mslr_settings_are_honoured(tiny) -> None:  # type: ignore[no-untyped-def]
    model = _build(tiny, "bert", "muscle", mslr_scales=[1.0, 2.0, 3.0], mslr_rank=2, mslr_alpha=4.0,
                   mslr_init="zero")
    m = unwrap(model).bert.pooler.dense
    assert m.K.tolist() == [1, 1, 2, 2, 3, 3] and m.scaling == pytest.approx(2.0)
    assert torch.count_nonzero(m.R) == 0
    assert defense_info(model).mslr_scales == [1.0, 2.0, 3.0]
    plain, _ = load_backbone(str(tiny("bert")), TinyLabels(2), seed=42)
    default_profile = resolve_config("default").model_copy(update={"method": "muscle"})
    default = unwrap(apply_defense(plain, default_profile, "bert")).bert.pooler.dense
    assert default.scales == [1.0, 4.0]  # hidden 32: the rule keeps two scales
    reference = unwrap(_build(tiny, "bert", "muscle")).bert.pooler.dense
    assert reference.scales == [1.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0]  # Table 6 as is


def test_apply_defense_is_seeded(tiny) -> None:  # type: ignore[no-untyped-def]
    def state(seed: int) -> dict[str, torch.Tensor]:
        m = _build(tiny, "bert", "muscle", seed=seed)
        return {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}

    a, b, c = state(1), state(1), state(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith(".L") or "lora_A" in k)


def test_apply_twice_is_refused(tiny) -> None:  # type: ignore[no-untyped-def]
    model = _build(tiny, "bert", "lora")
    with pytest.raises(ValueError):
        apply_defense(model, _cfg("lora"), "bert")


def test_every_method_forwards_on_every_family(tiny) -> None:  # type: ignore[no-untyped-def]
    for fam in ("bert", "roberta", "distilbert", "llama"):
        for method in METHODS:
            if fam == "distilbert" and method == "prefix":
                continue
            model, tok = load_backbone(str(tiny(fam, 3)), TinyLabels(3), seed=0)
            model = apply_defense(model, _cfg(method, prefix_tokens=2), fam)
            logits = _forward(model, tok, ["the good movie", "a bad film cf was really boring"])
            assert logits.shape == (2, 3), (fam, method)
            logits.sum().backward()
            assert any(p.grad is not None for p in model.parameters() if p.requires_grad), (fam, method)


def test_adapters_start_as_identity(tiny) -> None:  # type: ignore[no-untyped-def]
    plain, tok = load_backbone(str(tiny("bert")), TinyLabels(2), seed=3)
    adapted, _ = load_backbone(str(tiny("bert")), TinyLabels(2), seed=3)
    adapted = apply_defense(adapted, _cfg("adapter", adapter_bottleneck=4), "bert")
    wrapped = [m for m in adapted.modules() if isinstance(m, BottleneckAdapter)]
    assert len(wrapped) == 2 and wrapped[0].down.out_features == 4
    plain.eval()
    adapted.eval()
    texts = ["the good movie"]
    assert torch.allclose(_forward(plain, tok, texts), _forward(adapted, tok, texts), atol=1e-6)


def test_prefix_is_refused_for_distilbert(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="DistilBERT"):
        _build(tiny, "distilbert", "prefix")


def test_prefix_is_padding_invariant_and_reserves_positions(tiny) -> None:  # type: ignore[no-untyped-def]
    for fam in ("bert", "llama"):
        model, tok = load_backbone(str(tiny(fam)), TinyLabels(2), seed=0)
        model = apply_defense(model, _cfg("prefix", prefix_tokens=4), fam)
        model.eval()
        with torch.no_grad():
            both = _forward(model, tok, ["the good movie cf was fun", "bad"])
            alone = _forward(model, tok, ["bad"])
        assert torch.allclose(both[1], alone[0], atol=1e-5)
        assert effective_max_length(model, tok, 512, reserved=4) == 124


def test_llama_backbone_setup(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = load_backbone(str(tiny("llama")), TinyLabels(2), seed=0)
    assert family(model) == "llama"
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == tok.eos_token_id
    head = model.score
    assert isinstance(head, LlamaClassificationHead)
    assert head.dense.out_features == 16 and head.dense.bias is None and head.out_proj.bias is None
    assert head.dropout.p == pytest.approx(0.1)
    parent, attr = penultimate_linear(model)
    assert parent is head and attr == "dense"
    assert head_modules(model) == ["score"]


def test_load_backbone_sets_labels_and_is_seeded(tiny) -> None:  # type: ignore[no-untyped-def]
    a, _ = load_backbone(str(tiny("bert", 3)), TinyLabels(3), seed=5)
    b, _ = load_backbone(str(tiny("bert", 3)), TinyLabels(3), seed=5)
    assert a.config.num_labels == 3 and a.config.id2label == {0: "0", 1: "1", 2: "2"}
    assert torch.equal(a.classifier.weight, b.classifier.weight)


def test_unsupported_architecture_is_a_config_error(tmp_path: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="unsupported architecture"):
        load_backbone(str(tmp_path / "gpt2"), TinyLabels(2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        load_backbone(str(tmp_path / "empty"), TinyLabels(2))


def test_minilm_default_backbone() -> None:
    model, tok = load_backbone("minilm", TinyLabels(2), seed=0)
    assert family(model) == "bert" and model.config.hidden_size == 384
    model = apply_defense(model, resolve_config("default", {"method": "muscle"}), "bert")
    pooler = unwrap(model).bert.pooler.dense
    assert isinstance(pooler, MultiScaleLowRankLinear)
    assert pooler.scales == [1.0, 4.0, 8.0, 12.0, 16.0, 20.0]
    assert _trainable(model) == Counter({"lora": 24, "mslr": 2})
