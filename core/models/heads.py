"""Where the classification head and the "penultimate linear layer" sit in each family.

The authors' code (docs/reference-implementation.md §2.2) puts MSLR on the last hidden->hidden (or
hidden->small) linear layer before the output projection:

==========  ========================  =====================================================
family      penultimate linear        head modules (frozen unless ``train_head``)
==========  ========================  =====================================================
bert        ``bert.pooler.dense``     ``classifier``
roberta     ``classifier.dense``      ``classifier`` (``dense`` is the MSLR base, ``out_proj``)
distilbert  ``pre_classifier``        ``pre_classifier``, ``classifier``
llama       ``score.dense``           ``score`` (``dense`` is the MSLR base, ``out_proj``)
==========  ========================  =====================================================

For Llama-family decoders the authors replace ``score`` by dense(hidden->16, no bias) -> dropout(0.1)
-> out_proj(16->C, no bias), with no activation in between, so the head is still linear at inference
and collapses into one ``score`` matrix on export (see `LlamaClassificationHead.collapsed`).
"""

from __future__ import annotations

from torch import nn

from core.models.family import family, unwrap

LLAMA_HEAD_INNER = 16
LLAMA_HEAD_DROPOUT = 0.1

PENULTIMATE: dict[str, tuple[str, str]] = {
    "bert": ("bert.pooler", "dense"),
    "roberta": ("classifier", "dense"),
    "distilbert": ("", "pre_classifier"),
    "llama": ("score", "dense"),
}

HEAD_MODULES: dict[str, list[str]] = {
    "bert": ["classifier"],
    "roberta": ["classifier"],
    "distilbert": ["pre_classifier", "classifier"],
    "llama": ["score"],
}


class LlamaClassificationHead(nn.Module):
    """The authors' LLMCLassificationHead: dense(h->16) -> dropout(0.1) -> out_proj(16->C), no biases."""

    def __init__(self, hidden_size: int, num_labels: int, inner: int = LLAMA_HEAD_INNER,
                 dropout: float = LLAMA_HEAD_DROPOUT) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, inner, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(inner, num_labels, bias=False)

    def forward(self, hidden_states):  # type: ignore[no-untyped-def]
        return self.out_proj(self.dropout(self.dense(hidden_states)))

    def collapsed(self) -> nn.Linear:
        """One Linear equal to the head at inference (dropout is the identity then).

        ``dense`` may be an MSLR module: its merged weight is used (W_dense + dW).
        """
        dense = self.dense
        merged = getattr(dense, "merged_linear", None)
        dense_linear = merged() if callable(merged) else dense
        weight = self.out_proj.weight.detach() @ dense_linear.weight.detach()
        out = nn.Linear(weight.shape[1], weight.shape[0], bias=False,
                        device=weight.device, dtype=weight.dtype)
        out.weight.data.copy_(weight)
        return out


def install_llama_head(model: nn.Module) -> LlamaClassificationHead:
    """Replace ``model.score`` by the authors' two-layer head (random init, from the current RNG)."""
    base = unwrap(model)
    old = base.score
    if isinstance(old, LlamaClassificationHead):
        return old
    head = LlamaClassificationHead(old.in_features, old.out_features)
    head.to(device=old.weight.device, dtype=old.weight.dtype)
    base.score = head
    return head


def penultimate_linear(model: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the layer MSLR wraps, inside the unwrapped model."""
    fam = family(model)
    base = unwrap(model)
    parent_path, attr = PENULTIMATE[fam]
    parent = base.get_submodule(parent_path) if parent_path else base
    if fam == "llama" and not isinstance(parent, LlamaClassificationHead):
        raise ValueError("Llama head not installed: call install_llama_head(model) first")
    return parent, attr


def penultimate_name(model: nn.Module) -> str:
    """Dotted name of the penultimate linear inside the unwrapped model (e.g. ``bert.pooler.dense``)."""
    parent_path, attr = PENULTIMATE[family(model)]
    return f"{parent_path}.{attr}" if parent_path else attr


def head_modules(model: nn.Module) -> list[str]:
    """Dotted names (inside the unwrapped model) of the head, frozen when the head is frozen."""
    return list(HEAD_MODULES[family(model)])
