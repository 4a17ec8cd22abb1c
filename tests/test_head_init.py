"""Linear-probe head initialisation on the clean aux rows (head_init="probe")."""

from __future__ import annotations

import pytest
import torch

from core.config import resolve_config
from core.defenses.build import defend
from core.defenses.head_init import fit_linear_probe, head_features, output_layer
from core.models.backbones import load_backbone
from tests.fixtures_data import examples
from tests.tiny_models import TinyLabels


def test_fit_linear_probe_separates_a_separable_set() -> None:
    x = torch.tensor([[2.0, 0.1], [1.5, -0.2], [-2.0, 0.3], [-1.2, 0.0]])
    weight, bias = fit_linear_probe(x, [1, 1, 0, 0], 2)
    assert (torch.nn.functional.linear(x.double(), weight, bias).argmax(-1) == torch.tensor([1, 1, 0, 0])).all()
    _, no_bias = fit_linear_probe(x, [1, 1, 0, 0], 2, bias=False)
    assert no_bias is None


@pytest.mark.parametrize("fam", ["bert", "roberta", "llama"])
def test_probe_head_fits_the_aux_rows_and_stays_frozen(tiny, fam: str) -> None:
    torch.manual_seed(0)
    rows = examples([0, 1] * 8)
    rows = [type(r)(text=("great fine good " if r.label else "awful dull bad ") + r.text, label=r.label)
            for r in rows]
    # lora: a tiny random model's pooler saturates under the reference MSLR's large random update, which
    # leaves nothing to fit; the plain pooler keeps rows apart.
    config = resolve_config("reference", {"method": "lora", "max_length": 32})
    model, tok = load_backbone(str(tiny(fam)), TinyLabels(2), seed=1)
    random_weight = output_layer(model).weight.detach().clone()
    model, fit = defend(model, tok, config.model_copy(update={"head_init": "probe"}), fam, rows)
    layer = output_layer(model)
    assert not torch.equal(layer.weight.detach(), random_weight)
    assert not layer.weight.requires_grad  # train_head stays False: the probe only sets the start
    assert fit is not None and fit["rows"] == 16 and fit["aux_accuracy"] >= 0.9

    feats = head_features(model, tok, [r.text for r in rows], max_length=32)
    assert feats.shape == (16, layer.in_features)
    again = head_features(model, tok, [r.text for r in reversed(rows)], max_length=32)
    assert torch.allclose(again, feats.flip(0), atol=1e-5)  # rows come back in the caller's order

    model2, tok2 = load_backbone(str(tiny(fam)), TinyLabels(2), seed=1)
    _, none = defend(model2, tok2, config, fam, rows)
    assert none is None and torch.equal(output_layer(model2).weight.detach(), random_weight)
