"""Gradient alignment (GA) exactly as the authors' GATrainer does it (docs/reference-implementation.md §3.2-3.3).

Per step, after ``loss.backward()`` filled ``p.grad = g`` and a clean reference minibatch gave
``g_c = autograd.grad(ref_loss, params)``:

1. ``meanNorm`` = mean over tensors of ||g_c|| (non-zero tensors only);
2. the gate (one decision for all tensors of the step):
   * ``meanNorm > ga_min_ref_grad_norm`` and ``ref_loss > ga_gate_loss`` -> ``aligned``: g <- g_a;
   * elif ``mu_max > 0`` and ``epoch >= mu_start_epoch`` -> ``mixed``: g <- (1 - mu) g_a + mu g (Eq. 8);
   * else ``raw``: g is left alone (so epoch 0 with a low clean loss trains on raw gradients);
   * ``ga_gate_loss = None`` (paper-literal): always ``mixed`` (with mu = 0 that is pure alignment);
3. ``g_a = |g . g_c| / ||g_c||^2 * g_c`` (Eq. 7 with the absolute value: a conflicting gradient is
   flipped onto +g_c with the projection's magnitude), per parameter tensor by default, or once over
   the concatenated gradient (``ga_granularity = "global"``), or per row of each matrix (``per_row``,
   ours, see `_align_rows`). A tensor (or, globally, the whole
   vector) whose g or g_c has zero norm keeps its raw gradient.

mu: ``per_epoch`` (authors) mu_e = mu_max (e - start) / (epochs - start) for 0-based epoch e >= start,
constant within the epoch (0, 0.0111, ..., 0.0889 for 10 epochs); ``linear_step`` (paper) grows with
every step: mu_max (e + step_frac - start) / (epochs - start), clipped to [0, mu_max].

The maths is vectorised: on CUDA a handful of multi-tensor ``torch._foreach_*`` kernels, on CPU one
BLAS dot and one in-place update per tensor, with a single host sync for the coefficients. It is timed
(``AlignStats.seconds``) so the loop reports its share of a step (MiniLM muscle on CPU: ~1 ms of a
multi-second step).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Mode = Literal["aligned", "mixed", "raw"]


@dataclass(frozen=True)
class AlignStats:
    mode: Mode  # aligned: gate open (pure alignment); mixed: Eq. 8; raw: untouched
    ref_loss: float
    mean_ref_norm: float
    mu: float
    tensors_aligned: int  # tensors whose gradient was replaced
    tensors_skipped: int  # tensors left raw because g or g_c had zero norm (or no gradient)
    tensors_leaked: int  # of those, tensors whose non-zero (poisoned) gradient was kept: the real leak
    tensors_dropped: int  # ga_no_direction=skip: tensors with a non-zero g and no clean direction
    seconds: float  # wall time of the alignment maths (gate + projection), excluding the ref pass

    @property
    def idle(self) -> bool:
        """No gradient survived: nothing aligned, nothing kept raw, no mu share (only AdamW's momentum
        moves the weights this step)."""
        return self.mode != "raw" and self.tensors_aligned == 0 and self.tensors_leaked == 0 and self.mu == 0.0


def mu_for_epoch(config: Any, epoch: int, step_frac: float = 0.0) -> float:
    """mu for 0-based ``epoch`` (and, for ``linear_step``, the fraction of the epoch already done)."""
    mu_max = float(config.mu_max)
    start = int(config.mu_start_epoch)
    span = int(config.epochs) - start
    if mu_max <= 0 or span <= 0:
        return 0.0
    if config.mu_schedule == "linear_step":
        t = (epoch + step_frac - start) / span
        return mu_max * min(1.0, max(0.0, t))
    if epoch < start:
        return 0.0
    return mu_max * (epoch - start) / span


def choose_mode(config: Any, ref_loss: float, mean_ref_norm: float, epoch: int) -> Mode:
    """The authors' gate (see module docstring); one decision per step."""
    if config.ga_gate_loss is None:
        return "mixed"
    if mean_ref_norm > config.ga_min_ref_grad_norm and ref_loss > config.ga_gate_loss:
        return "aligned"
    if config.mu_max > 0 and epoch >= config.mu_start_epoch:
        return "mixed"
    return "raw"


def _pairs(params: Sequence[Any], clean_grads: Sequence[torch.Tensor | None]
           ) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    if len(params) != len(clean_grads):
        raise ValueError(f"{len(params)} params but {len(clean_grads)} clean gradients")
    gs: list[torch.Tensor] = []
    gcs: list[torch.Tensor] = []
    missing = 0
    for p, gc in zip(params, clean_grads, strict=True):
        g = p.grad
        if g is None or gc is None:
            missing += 1  # pair by parameter, never by position in a filtered list (reference-implementation.md §10)
            continue
        gs.append(g)
        gcs.append(gc if gc.dtype == g.dtype else gc.to(g.dtype))
    return gs, gcs, missing


def _dots(gs: list[torch.Tensor], gcs: list[torch.Tensor], fused: bool | None = None) -> torch.Tensor:
    """Per-tensor dot products g_i . gc_i as one vector (``fused`` None: fused on CUDA only)."""
    if fused is None:
        fused = gs[0].is_cuda
    if fused and len(gs) > 1:
        # GPU: three launches whatever the tensor count (fused multiply, one concat, segmented sum).
        prods = torch._foreach_mul(gs, gcs)
        flat = torch.cat([t.reshape(-1) for t in prods])
        lengths = torch.tensor([t.numel() for t in gs], device=flat.device)
        return torch.segment_reduce(flat, "sum", lengths=lengths)
    # CPU: per-tensor BLAS dots are the fastest option (segment_reduce is slow there).
    return torch.stack([torch.dot(g.reshape(-1), c.reshape(-1)) for g, c in zip(gs, gcs, strict=True)])


def mean_ref_grad_norm(clean_grads: Sequence[torch.Tensor | None]) -> float:
    """Mean of ||g_c|| over tensors with a non-zero clean gradient (0.0 when there is none)."""
    present = [g for g in clean_grads if g is not None]
    if not present:
        return 0.0
    norms = torch.stack(torch._foreach_norm(present)).float()
    nonzero = norms[norms > 0]
    return float(nonzero.mean()) if nonzero.numel() else 0.0


@torch.no_grad()
def align_gradients(params: Sequence[Any], clean_grads: Sequence[torch.Tensor | None],
                    granularity: str = "per_tensor", mu: float = 0.0, mode: Mode = "aligned",
                    fused: bool | None = None) -> tuple[int, int]:
    """Rewrite ``p.grad`` in place: ``aligned`` g <- g_a; ``mixed`` g <- (1-mu) g_a + mu g; ``raw`` no-op.

    ``fused`` (None: on CUDA only) uses multi-tensor kernels, the fastest on GPUs; on CPU a per-tensor
    loop makes fewer memory passes. Returns (tensors changed, tensors left raw).
    """
    gs, gcs, missing = _pairs(params, clean_grads)
    if mode == "raw" or not gs:
        return 0, len(gs) + missing
    if fused is None:
        fused = gs[0].is_cuda
    keep = mu if mode == "mixed" else 0.0  # weight of the raw gradient
    ng = torch.stack(torch._foreach_norm(gs))
    nc = torch.stack(torch._foreach_norm(gcs))
    dots = _dots(gs, gcs, fused)
    if granularity == "global":
        nc2 = (nc.double() ** 2).sum()
        if float((ng.double() ** 2).sum()) <= 0 or float(nc2) <= 0:
            return 0, len(gs) + missing
        coef = (1.0 - keep) * abs(float(dots.double().sum() / nc2))
        torch._foreach_mul_(gs, keep)
        torch._foreach_add_(gs, gcs, alpha=coef)
        return len(gs), missing
    if granularity == "per_row":
        return _align_rows(gs, gcs, keep), missing
    if granularity != "per_tensor":
        raise ValueError(f"unknown GA granularity {granularity!r}")
    valid = (ng > 0) & (nc > 0)
    safe_nc2 = torch.where(valid, nc * nc, torch.ones_like(nc))
    scale = torch.where(valid, dots / safe_nc2, torch.zeros_like(dots))
    a = torch.where(valid, (1.0 - keep) * scale.abs(), torch.zeros_like(scale))
    b = torch.where(valid, torch.full_like(scale, keep), torch.ones_like(scale))
    # One host sync for all coefficients, then g <- b g + a g_c in place.
    a_list, b_list, ok = a.tolist(), b.tolist(), valid.tolist()
    if fused:
        # Two fused launches for all tensors (a per-tensor loop would cost one launch per tensor).
        torch._foreach_mul_(gs, b_list)
        torch._foreach_add_(gs, torch._foreach_mul(gcs, a_list))
    else:
        # CPU: one memory pass per tensor, no temporaries; untouched tensors are skipped.
        for g, gc, ai, bi, valid_i in zip(gs, gcs, a_list, b_list, ok, strict=True):
            if not valid_i:
                continue
            if bi == 0.0:
                torch.mul(gc, ai, out=g)
            else:
                g.mul_(bi).add_(gc, alpha=ai)
    changed = int(sum(ok))
    return changed, len(gs) - changed + missing


def _align_rows(gs: list[torch.Tensor], gcs: list[torch.Tensor], keep: float) -> int:
    """Eq. 7 per row (per output unit) of every tensor of two or more dimensions, per tensor for vectors.

    Finer than the authors' per-tensor alignment: each row keeps the clean gradient's direction but gets
    its own step length from the training gradient. A row whose clean gradient is zero (an embedding row
    no clean token uses, such as a rare-word trigger's) gets no aligned update at all, where per-tensor
    alignment would leave a zero-norm tensor raw.
    """
    for g, gc in zip(gs, gcs, strict=True):
        g2 = g.reshape(g.shape[0], -1) if g.dim() >= 2 else g.reshape(1, -1)
        c2 = gc.reshape(g2.shape)
        nc2 = (c2 * c2).sum(dim=1, keepdim=True)
        coef = torch.where(nc2 > 0, (g2 * c2).sum(dim=1, keepdim=True).abs() / nc2.clamp_min(1e-38),
                           torch.zeros_like(nc2))
        g2.mul_(keep).add_(c2 * (coef * (1.0 - keep)))
    return len(gs)


@torch.no_grad()
def leaked_tensors(params: Sequence[Any], clean_grads: Sequence[torch.Tensor | None],
                   granularity: str = "per_tensor") -> int:
    """Tensors whose non-zero training gradient an aligned step would keep as it is: those with no clean
    gradient at all and, per tensor, those whose clean gradient is zero. A tensor whose own gradient is
    zero (LoRA's A while B is still zero) is skipped too, but nothing of the poison passes through it."""
    own = _norms([p.grad for p in params])
    clean = _norms(clean_grads)
    return sum(1 for g, gc in zip(own, clean, strict=True)
               if g is not None and g > 0 and (gc is None or (granularity == "per_tensor" and gc == 0)))


def _norms(tensors: Sequence[torch.Tensor | None]) -> list[float | None]:
    """Norm of each tensor (None stays None), with one host sync for all of them."""
    present = [t for t in tensors if t is not None]
    values = iter(torch.stack(torch._foreach_norm(present)).tolist() if present else [])
    return [None if t is None else next(values) for t in tensors]


@torch.no_grad()
def drop_undirected(params: Sequence[Any], clean_grads: Sequence[torch.Tensor | None], granularity: str,
                    keep: float, min_norm: float) -> tuple[list[torch.Tensor | None], int]:
    """``ga_no_direction = "skip"``: a tensor whose clean gradient gives no direction (none, or a norm
    at most ``min_norm``; globally: the whole clean gradient's) gets Eq. 8 with g_a = 0, i.e.
    g <- keep * g, instead of its raw gradient. Returns the clean gradients with those set to None, so
    the alignment leaves the scaled gradient alone, and how many non-zero gradients were so dropped."""
    out = list(clean_grads)
    clean = _norms(out)
    if granularity == "global":
        total = sum(n * n for n in clean if n is not None) ** 0.5
        undirected = [total <= min_norm] * len(out)
    else:
        undirected = [n is None or (granularity == "per_tensor" and n <= min_norm) for n in clean]
    own = _norms([p.grad for p in params])
    dropped = 0
    for i, (p, flag, g_norm) in enumerate(zip(params, undirected, own, strict=True)):
        if flag:
            if p.grad is not None:
                dropped += int(bool(g_norm and g_norm > 0))
                p.grad.mul_(keep)
            out[i] = None
    return out, dropped


def apply_alignment(params: Sequence[Any], clean_grads: Sequence[torch.Tensor | None], ref_loss: float,
                    config: Any, epoch: int, step_frac: float = 0.0) -> AlignStats:
    """Gate + mu + alignment for one step (``params[i].grad`` holds g). ``epoch`` is 0-based."""
    start = time.perf_counter()
    mean_norm = mean_ref_grad_norm(clean_grads)
    mode = choose_mode(config, ref_loss, mean_norm, epoch)
    mu = mu_for_epoch(config, epoch, step_frac) if mode == "mixed" else 0.0
    leaked = dropped = 0
    if mode != "raw":
        if getattr(config, "ga_no_direction", "keep_raw") == "skip":
            clean_grads, dropped = drop_undirected(params, clean_grads, config.ga_granularity, mu,
                                          float(config.ga_min_ref_grad_norm))
        else:
            leaked = leaked_tensors(params, clean_grads, config.ga_granularity)
    changed, skipped = align_gradients(params, clean_grads, config.ga_granularity, mu, mode)
    return AlignStats(mode=mode, ref_loss=float(ref_loss), mean_ref_norm=mean_norm, mu=mu,
                      tensors_aligned=changed, tensors_skipped=skipped, tensors_leaked=leaked,
                      tensors_dropped=dropped,
                      seconds=time.perf_counter() - start)
