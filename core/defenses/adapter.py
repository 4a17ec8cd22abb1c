"""Bottleneck adapters for the ``adapter`` baseline (the authors used OpenDelta's Adapter, bottleneck 8).

PEFT has no Houlsby/Pfeiffer bottleneck adapter, and OpenDelta is unmaintained, so this is a small
hand-written one: after each layer's FFN output projection, h <- h + up(act(down(h))) with
``down: d -> bottleneck``, ``up: bottleneck -> d`` (up zero-initialised, so training starts from the
pretrained function). Like OpenDelta's default it sits inside the residual branch, before the layer's
residual add and LayerNorm. Adapters cannot be merged into the base weights (non-linear), so a model
trained this way exports through `export_adapter` only.
"""

from __future__ import annotations

from torch import nn

# Per family: the FFN output projection of every layer (suffix of the module name).
FFN_OUTPUT: dict[str, str] = {
    "bert": "output.dense",  # encoder.layer.N.output.dense (attention.output.dense is excluded below)
    "roberta": "output.dense",
    "distilbert": "ffn.lin2",
    "llama": "mlp.down_proj",
}


class BottleneckAdapter(nn.Module):
    """Wraps a Linear: y = base(x); y + up(gelu(down(y)))."""

    def __init__(self, base: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.base = base
        dim = base.out_features
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.down = nn.Linear(dim, bottleneck, **factory)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim, **factory)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.base(x)
        return y + self.up(self.act(self.down(y)))


def install_adapters(model: nn.Module, fam: str, bottleneck: int) -> list[str]:
    """Wrap every layer's FFN output linear; returns the wrapped module names. Freezes nothing."""
    suffix = FFN_OUTPUT[fam]
    targets = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name.endswith(suffix)
               and not name.endswith("attention.output.dense")]
    if not targets:
        raise ValueError(f"no FFN output layer named *{suffix} found for family {fam}")
    for name in targets:
        parent_name, attr = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, BottleneckAdapter(getattr(parent, attr), bottleneck))
    return targets
