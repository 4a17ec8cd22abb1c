"""Multi-scale low-rank linear layer (MSLR), as in the authors' `MultiScaleLowRankLinear`
(docs/reference-implementation.md §2.3).

    h = W0 x + b0 + (alpha / IR) * R ((L x) * K)

* ``L`` (BW*IR x in) and ``R`` (out x BW*IR) are trainable; ``K`` is a buffer holding each radial scale
  of S repeated IR times (IR = ``rank``, the bandwidth; BW = len(S)). K scales each component of the
  low-rank projection L x, i.e. the rows of L.
* ``W0, b0`` are a frozen copy of the wrapped layer (the authors' ``shortcut=false``).
* Init: the authors apply Kaiming-uniform(a=sqrt(5)) to **both** L and R, so dW != 0 at step 0
  (``init="kaiming"``). ``init="zero"`` zeroes R instead (LoRA-style, the paper-literal reading: the
  model starts at the pretrained function).
* The authors build a dropout but never apply it; there is none here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class MultiScaleLowRankLinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` and adds the multi-scale low-rank path."""

    def __init__(self, base: nn.Linear, scales: Sequence[float], rank: int = 1, alpha: float = 6.0,
                 init: str = "kaiming") -> None:
        super().__init__()
        if not scales:
            raise ValueError("MSLR needs at least one scale")
        if rank < 1:
            raise ValueError("MSLR rank (bandwidth) must be >= 1")
        if init not in ("kaiming", "zero"):
            raise ValueError(f"unknown MSLR init {init!r}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.scales = [float(s) for s in scales]
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.init = init
        # Frozen copy of the original layer (W0, b0): never trained, whatever the method says.
        self.base = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                              device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            self.base.weight.copy_(base.weight)
            if base.bias is not None:
                self.base.bias.copy_(base.bias)
        self.base.requires_grad_(False)
        inner = len(self.scales) * rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.L = nn.Parameter(torch.empty(inner, base.in_features, **factory))
        self.R = nn.Parameter(torch.empty(base.out_features, inner, **factory))
        k = torch.tensor(self.scales, **factory).repeat_interleave(rank)  # [s1]*IR + [s2]*IR + ...
        self.register_buffer("K", k)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.L, a=math.sqrt(5))
        if self.init == "zero":
            nn.init.zeros_(self.R)
        else:
            nn.init.kaiming_uniform_(self.R, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """dW = (alpha/IR) * R diag(K) L, shape (out, in)."""
        return self.scaling * (self.R * self.K) @ self.L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(x, self.L) * self.K  # (..., BW*IR): each radial component scaled by its K
        return self.base(x) + self.scaling * F.linear(low, self.R)

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with W0 + dW and b0: identical outputs, no MSLR at inference."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        delta = self.delta_weight().to(torch.float64)
        out.weight.copy_((self.base.weight.to(torch.float64) + delta).to(out.weight.dtype))
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, scales={self.scales}, rank={self.rank}, "
                f"alpha={self.alpha}, init={self.init}")
