"""MultiScaleLowRankLinear: the forward formula, the merged weight, init options, default scales."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.defenses.default_scales import BERT_BASE, LARGE, LLAMA, ROBERTA_BASE, default_scales
from core.defenses.mslr import MultiScaleLowRankLinear


def _base(in_f: int = 5, out_f: int = 4, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_f, out_f, bias=bias)


def test_forward_matches_formula_by_hand() -> None:
    base = _base(3, 2)
    m = MultiScaleLowRankLinear(base, scales=[1.0, 4.0], rank=1, alpha=6.0)
    with torch.no_grad():
        m.L.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]))
        m.R.copy_(torch.tensor([[1.0, 0.5], [-1.0, 2.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    # L x = [7, -1]; * K = [7, -4]; R @ = [7 - 2, -7 - 8] = [5, -15]; * alpha/IR = 6 -> [30, -90]
    expected = base(x) + torch.tensor([[30.0, -90.0]])
    assert torch.allclose(m(x), expected, atol=1e-5)


def test_rank_repeats_each_scale() -> None:
    m = MultiScaleLowRankLinear(_base(), scales=[1, 2, 3], rank=2, alpha=6.0)
    assert m.K.tolist() == [1, 1, 2, 2, 3, 3]
    assert m.L.shape == (6, 5) and m.R.shape == (4, 6)
    assert m.scaling == pytest.approx(3.0)  # alpha / IR


@pytest.mark.parametrize("rank", [1, 3])
def test_forward_equals_explicit_formula_and_merged_weight(rank: int) -> None:
    base = _base(7, 6)
    m = MultiScaleLowRankLinear(base, scales=[1, 4, 8], rank=rank, alpha=6.0)
    x = torch.randn(10, 7, dtype=torch.float32)
    formula = base(x) + (6.0 / rank) * ((x @ m.L.T) * m.K) @ m.R.T
    assert torch.allclose(m(x), formula, atol=1e-4)
    delta = (6.0 / rank) * m.R @ torch.diag(m.K) @ m.L
    assert torch.allclose(m.delta_weight(), delta, atol=1e-5)
    merged = m.merged_linear()
    assert isinstance(merged, nn.Linear)
    assert torch.allclose(merged.weight, base.weight + delta, atol=1e-5)
    assert torch.equal(merged.bias, base.bias)
    assert torch.allclose(merged(x), m(x), atol=1e-4)


def test_kaiming_init_is_nonzero_and_bounded() -> None:
    m = MultiScaleLowRankLinear(_base(64, 64), scales=BERT_BASE, alpha=6.0)
    assert m.L.abs().max() <= 1 / math.sqrt(64) + 1e-6  # kaiming_uniform(a=sqrt5): +-1/sqrt(fan_in)
    assert m.R.abs().max() <= 1 / math.sqrt(len(BERT_BASE)) + 1e-6
    assert m.R.abs().sum() > 0 and m.L.abs().sum() > 0
    x = torch.randn(3, 64)
    assert not torch.allclose(m(x), m.base(x))  # the authors' init: dW != 0 at step 0


def test_zero_init_starts_at_base_function() -> None:
    base = _base()
    m = MultiScaleLowRankLinear(base, scales=[1, 2], init="zero")
    x = torch.randn(4, 5)
    assert torch.equal(m.R, torch.zeros_like(m.R))
    assert torch.allclose(m(x), base(x))


def test_base_is_a_frozen_copy() -> None:
    base = _base()
    m = MultiScaleLowRankLinear(base, scales=[1, 2])
    assert not any(p.requires_grad for p in m.base.parameters())
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"L", "R"}
    with torch.no_grad():
        base.weight.add_(1.0)  # the original can change; the copy does not
    assert not torch.equal(m.base.weight, base.weight)
    assert "K" in dict(m.named_buffers())


def test_gradients_reach_l_and_r_only() -> None:
    m = MultiScaleLowRankLinear(_base(), scales=[1, 4])
    m(torch.randn(2, 5)).sum().backward()
    assert m.L.grad is not None and m.R.grad is not None
    assert m.base.weight.grad is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MultiScaleLowRankLinear(_base(), scales=[])
    with pytest.raises(ValueError):
        MultiScaleLowRankLinear(_base(), scales=[1], init="ones")


def test_default_scales_table6() -> None:
    assert default_scales("bert", 768, 12) == [1, 4, 8, 12, 16, 20, 24, 28]
    assert default_scales("roberta", 768, 12) == [1, 2, 4, 6, 8, 10, 12, 14, 16]
    assert default_scales("bert", 1024, 24) == LARGE
    assert default_scales("roberta", 1024, 24) == LARGE
    assert default_scales("llama", 4096, 32) == LLAMA == [1, 2, 3, 4]
    assert ROBERTA_BASE == [1, 2, 4, 6, 8, 10, 12, 14, 16]


def test_default_scales_rule() -> None:
    assert default_scales("bert", 384, 6) == [1, 4, 8, 12, 16, 20]  # MiniLM-L6
    assert default_scales("distilbert", 768, 6) == BERT_BASE
    assert default_scales("bert", 32, 2) == [1, 4]  # never fewer than two scales
    widths = [128, 256, 384, 512, 768]
    lengths = [len(default_scales("bert", w, 6)) for w in widths]
    assert lengths == sorted(lengths)  # monotone in width
    with pytest.raises(ValueError):
        default_scales("gpt2", 768, 12)


def test_reference_profile_keeps_the_family_table_value() -> None:
    assert default_scales("bert", 384, 6, profile="reference") == BERT_BASE
    assert default_scales("roberta", 384, 6, profile="reference") == ROBERTA_BASE
    assert default_scales("bert", 1024, 24, profile="reference") == LARGE
    assert default_scales("llama", 2048, 16, profile="reference") == LLAMA
