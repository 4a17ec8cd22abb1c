"""Gradient alignment: Eq. 7 with |.|, per tensor and global, Eq. 8 mixing, the gate and mu."""

from __future__ import annotations

import pytest
import torch

from core.config import TrainConfig, resolve_config
from core.defenses.alignment import (
    _dots,
    align_gradients,
    apply_alignment,
    choose_mode,
    leaked_tensors,
    mean_ref_grad_norm,
    mu_for_epoch,
)


def _param(grad: list[float]) -> torch.Tensor:
    p = torch.zeros(len(grad), requires_grad=True)
    p.grad = torch.tensor(grad)
    return p


def _ref(**overrides: object) -> TrainConfig:
    # model_copy, not resolve_config overrides: those drop None values (ga_gate_loss=None is meaningful)
    return resolve_config("reference").model_copy(update=overrides)


def test_projection_hand_example() -> None:
    p = _param([1.0, 2.0])
    align_gradients([p], [torch.tensor([3.0, 0.0])])
    # (g.gc)/|gc|^2 = 3/9 -> |1/3| * [3, 0] = [1, 0]
    assert torch.allclose(p.grad, torch.tensor([1.0, 0.0]))


def test_conflicting_gradient_is_flipped_onto_clean_direction() -> None:
    p = _param([-1.0, 0.0])
    align_gradients([p], [torch.tensor([2.0, 0.0])])
    # scale = -2/4 -> |scale| * gc = 0.5 * [2, 0] = [1, 0] (not zero, not [-1, 0])
    assert torch.allclose(p.grad, torch.tensor([1.0, 0.0]))


def test_per_tensor_alignment_is_independent() -> None:
    a, b = _param([1.0, 2.0]), _param([0.0, -4.0])
    changed, skipped = align_gradients([a, b], [torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0])])
    assert torch.allclose(a.grad, torch.tensor([1.0, 0.0]))
    assert torch.allclose(b.grad, torch.tensor([2.0, 2.0]))  # |-4/2| * [1, 1]
    assert (changed, skipped) == (2, 0)


def test_zero_norm_tensors_keep_raw_gradient() -> None:
    a, b, c = _param([1.0, 2.0]), _param([0.0, 0.0]), _param([5.0, 5.0])
    changed, skipped = align_gradients([a, b, c], [torch.zeros(2), torch.tensor([1.0, 0.0]), None])
    assert torch.equal(a.grad, torch.tensor([1.0, 2.0]))  # clean gradient is zero
    assert torch.equal(b.grad, torch.tensor([0.0, 0.0]))  # own gradient is zero
    assert torch.equal(c.grad, torch.tensor([5.0, 5.0]))  # no clean gradient at all
    assert (changed, skipped) == (0, 3)
    # of the three, a and c keep a non-zero raw gradient (a leak); b's zero gradient carries nothing
    assert leaked_tensors([a, b, c], [torch.zeros(2), torch.tensor([1.0, 0.0]), None]) == 2
    assert leaked_tensors([a, b, c], [torch.zeros(2), torch.tensor([1.0, 0.0]), None], "global") == 1
    no_grad = torch.zeros(2, requires_grad=True)  # a trainable tensor the training batch did not reach
    assert leaked_tensors([no_grad, a], [None, torch.zeros(2)]) == 1


def test_mixed_mode_is_eq8() -> None:
    p = _param([1.0, 2.0])
    align_gradients([p], [torch.tensor([3.0, 0.0])], mu=0.25, mode="mixed")
    expected = 0.75 * torch.tensor([1.0, 0.0]) + 0.25 * torch.tensor([1.0, 2.0])
    assert torch.allclose(p.grad, expected)


def test_raw_mode_leaves_gradients() -> None:
    p = _param([1.0, 2.0])
    align_gradients([p], [torch.tensor([3.0, 0.0])], mode="raw")
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0]))


def test_global_variant_projects_the_concatenated_vector() -> None:
    a, b = _param([1.0, 0.0]), _param([0.0, 1.0])
    gc = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    align_gradients([a, b], gc, granularity="global")
    # g.gc = 1 + 1 = 2, |gc|^2 = 3 -> 2/3 * gc for every tensor
    assert torch.allclose(a.grad, torch.tensor([2 / 3, 0.0]))
    assert torch.allclose(b.grad, torch.tensor([2 / 3, 2 / 3]))
    # per tensor would give [1, 0] and [0.5, 0.5]: the two variants really differ
    a2, b2 = _param([1.0, 0.0]), _param([0.0, 1.0])
    align_gradients([a2, b2], gc, granularity="per_tensor")
    assert torch.allclose(a2.grad, torch.tensor([1.0, 0.0]))
    assert torch.allclose(b2.grad, torch.tensor([0.5, 0.5]))


def test_global_variant_mixed() -> None:
    a = _param([-1.0, 0.0])
    align_gradients([a], [torch.tensor([2.0, 0.0])], granularity="global", mu=0.5, mode="mixed")
    assert torch.allclose(a.grad, 0.5 * torch.tensor([1.0, 0.0]) + 0.5 * torch.tensor([-1.0, 0.0]))


def test_per_row_variant_hand_example() -> None:
    w = torch.zeros(3, 2, requires_grad=True)
    w.grad = torch.tensor([[1.0, 2.0], [-4.0, 0.0], [7.0, 7.0]])
    vec = _param([0.0, 2.0])
    gc = [torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), torch.tensor([1.0, 1.0])]
    align_gradients([w, vec], gc, granularity="per_row")
    # row 0: 3/9 * [3, 0] = [1, 0]; row 1: |-4/2| * [1, 1] = [2, 2]; row 2: no clean gradient -> no update
    assert torch.allclose(w.grad, torch.tensor([[1.0, 0.0], [2.0, 2.0], [0.0, 0.0]]))
    assert torch.allclose(vec.grad, torch.tensor([1.0, 1.0]))  # a vector is one row: |2/2| * [1, 1]
    # per tensor on the same matrix: one coefficient, and it differs from the rows' own
    w2 = torch.zeros(3, 2, requires_grad=True)
    w2.grad = torch.tensor([[1.0, 2.0], [-4.0, 0.0], [7.0, 7.0]])
    align_gradients([w2], gc[:1], granularity="per_tensor")
    assert torch.allclose(w2.grad, abs(-1.0 / 11) * gc[0])


def test_per_row_variant_mixed() -> None:
    w = torch.zeros(1, 2, requires_grad=True)
    w.grad = torch.tensor([[-1.0, 0.0]])
    align_gradients([w], [torch.tensor([[2.0, 0.0]])], granularity="per_row", mu=0.5, mode="mixed")
    assert torch.allclose(w.grad, torch.tensor([[0.5 * 1.0 + 0.5 * -1.0, 0.0]]))


def test_matrix_tensors_and_fused_dot_path_agree() -> None:
    torch.manual_seed(0)
    gs = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2)]
    gcs = [torch.randn_like(g) for g in gs]
    expected = torch.stack([(g * c).sum() for g, c in zip(gs, gcs, strict=True)])
    assert torch.allclose(_dots(gs, gcs, fused=False), expected, atol=1e-5)
    assert torch.allclose(_dots(gs, gcs, fused=True), expected, atol=1e-5)  # the CUDA path
    for fused in (False, True):  # the CPU loop and the multi-tensor (CUDA) path give the same result
        for mode, mu in (("aligned", 0.0), ("mixed", 0.3)):
            params = []
            for g in gs:
                p = torch.zeros_like(g, requires_grad=True)
                p.grad = g.clone()
                params.append(p)
            params[1].grad.zero_()  # a zero tensor stays raw on both paths
            assert align_gradients(params, gcs, mode=mode, mu=mu, fused=fused) == (2, 1)
            for i, (p, g, c) in enumerate(zip(params, gs, gcs, strict=True)):
                if i == 1:
                    assert torch.count_nonzero(p.grad) == 0
                    continue
                g_a = abs(float((g * c).sum() / (c * c).sum())) * c
                assert torch.allclose(p.grad, (1 - mu) * g_a + mu * g, atol=1e-5)


def test_mu_schedule_reference_values() -> None:
    cfg = _ref(epochs=10, mu_max=0.1, mu_start_epoch=1)
    mus = [mu_for_epoch(cfg, e) for e in range(10)]
    assert mus[0] == 0.0 and mus[1] == 0.0
    assert mus[2] == pytest.approx(0.1 / 9)  # 0.0111
    assert mus[9] == pytest.approx(0.8 / 9)  # 0.0889: mu_max is never reached
    assert mus == pytest.approx([0.0] + [0.1 * (e - 1) / 9 for e in range(1, 10)])
    assert mu_for_epoch(cfg, 5, step_frac=0.9) == mu_for_epoch(cfg, 5)  # constant within an epoch


def test_mu_linear_step_schedule() -> None:
    cfg = _ref(epochs=4, mu_max=0.2, mu_start_epoch=0, mu_schedule="linear_step", ga_gate_loss=None)
    assert mu_for_epoch(cfg, 0, 0.0) == 0.0
    assert mu_for_epoch(cfg, 1, 0.5) == pytest.approx(0.2 * 1.5 / 4)
    assert mu_for_epoch(cfg, 3, 0.999) < 0.2
    assert mu_for_epoch(cfg, 0, 0.25) < mu_for_epoch(cfg, 0, 0.5)  # grows within an epoch
    assert mu_for_epoch(_ref(mu_max=0.0), 5) == 0.0


def test_gate() -> None:
    cfg = _ref(epochs=10)  # gate at 0.4, min norm 5e-7, mu from epoch 1
    assert choose_mode(cfg, ref_loss=0.5, mean_ref_norm=1.0, epoch=0) == "aligned"
    assert choose_mode(cfg, ref_loss=0.5, mean_ref_norm=1.0, epoch=5) == "aligned"
    assert choose_mode(cfg, ref_loss=0.3, mean_ref_norm=1.0, epoch=0) == "raw"  # epoch 0: raw g
    assert choose_mode(cfg, ref_loss=0.3, mean_ref_norm=1.0, epoch=1) == "mixed"
    assert choose_mode(cfg, ref_loss=0.4, mean_ref_norm=1.0, epoch=3) == "mixed"  # strictly above opens
    assert choose_mode(cfg, ref_loss=0.9, mean_ref_norm=1e-8, epoch=3) == "mixed"  # vanishing clean grad
    assert choose_mode(cfg, ref_loss=0.9, mean_ref_norm=1e-8, epoch=0) == "raw"
    no_mu = _ref(mu_max=0.0)
    assert choose_mode(no_mu, ref_loss=0.3, mean_ref_norm=1.0, epoch=5) == "raw"
    llama = _ref(mu_max=0.0, mu_start_epoch=0, ga_gate_loss=0.0)  # the authors' Llama settings
    assert choose_mode(llama, ref_loss=0.01, mean_ref_norm=1.0, epoch=0) == "aligned"
    ungated = _ref(ga_gate_loss=None)
    assert choose_mode(ungated, ref_loss=5.0, mean_ref_norm=1.0, epoch=0) == "mixed"


def test_mean_ref_grad_norm_ignores_zero_tensors() -> None:
    grads = [torch.tensor([3.0, 4.0]), torch.zeros(3), None, torch.tensor([1.0])]
    assert mean_ref_grad_norm(grads) == pytest.approx(3.0)  # mean(5, 1)
    assert mean_ref_grad_norm([torch.zeros(2)]) == 0.0


def test_apply_alignment_end_to_end() -> None:
    cfg = _ref(epochs=10)
    p = _param([1.0, 2.0])
    stats = apply_alignment([p], [torch.tensor([3.0, 0.0])], ref_loss=0.7, config=cfg, epoch=4)
    assert stats.mode == "aligned" and stats.mu == 0.0 and stats.tensors_aligned == 1
    assert torch.allclose(p.grad, torch.tensor([1.0, 0.0]))
    assert stats.seconds >= 0.0

    q = _param([1.0, 2.0])
    stats = apply_alignment([q], [torch.tensor([3.0, 0.0])], ref_loss=0.1, config=cfg, epoch=4)
    mu = 0.1 * 3 / 9
    assert stats.mode == "mixed" and stats.mu == pytest.approx(mu)
    assert torch.allclose(q.grad, (1 - mu) * torch.tensor([1.0, 0.0]) + mu * torch.tensor([1.0, 2.0]))

    r = _param([1.0, 2.0])
    stats = apply_alignment([r], [torch.tensor([3.0, 0.0])], ref_loss=0.1, config=cfg, epoch=0)
    assert stats.mode == "raw"
    assert torch.equal(r.grad, torch.tensor([1.0, 2.0]))


def test_pairs_must_line_up() -> None:
    with pytest.raises(ValueError):
        align_gradients([_param([1.0])], [])


def test_no_direction_skip_drops_the_raw_gradient_where_keep_raw_passes_it() -> None:
    clean = [torch.tensor([3.0, 0.0]), torch.zeros(2), torch.tensor([1e-9, 0.0]), None]
    for policy, expected_leaks in (("keep_raw", 2), ("skip", 0)):
        cfg = _ref(ga_gate_loss=None, ga_no_direction=policy, epochs=10)
        ps = [_param([1.0, 2.0]), _param([5.0, 5.0]), _param([4.0, 0.0]), _param([6.0, 6.0])]
        stats = apply_alignment(ps, clean, ref_loss=0.7, config=cfg, epoch=0)  # mu 0: pure alignment
        assert torch.allclose(ps[0].grad, torch.tensor([1.0, 0.0]))  # aligned as before
        assert stats.tensors_leaked == expected_leaks
        assert stats.tensors_dropped == (3 if policy == "skip" else 0)
        if policy == "keep_raw":  # the authors: zero or missing g_c keeps the poisoned g ...
            assert torch.equal(ps[1].grad, torch.tensor([5.0, 5.0]))
            assert torch.equal(ps[3].grad, torch.tensor([6.0, 6.0]))
            assert torch.allclose(ps[2].grad, torch.tensor([4.0, 0.0]))  # ... a tiny g_c is a direction
        else:  # skip: no clean direction (a norm up to ga_min_ref_grad_norm included), no update
            assert all(torch.equal(p.grad, torch.zeros(2)) for p in ps[1:])
    mixed = _param([5.0, 5.0])  # Eq. 8 with g_a = 0 keeps the mu share of g
    cfg = _ref(ga_gate_loss=None, ga_no_direction="skip", epochs=10)
    stats = apply_alignment([mixed], [torch.zeros(2)], ref_loss=0.7, config=cfg, epoch=4)
    assert torch.allclose(mixed.grad, stats.mu * torch.tensor([5.0, 5.0])) and stats.mu > 0
    whole = [_param([1.0, 1.0]), _param([2.0, 0.0])]  # global: only the whole clean gradient counts
    cfg = _ref(ga_gate_loss=None, ga_no_direction="skip", ga_granularity="global")
    apply_alignment(whole, [torch.zeros(2), torch.zeros(2)], ref_loss=0.7, config=cfg, epoch=0)
    assert all(torch.equal(p.grad, torch.zeros(2)) for p in whole)
