"""kd_loss_ref.py — PyTorch (float64) reference for kd's distillation loss.

usage: kd_loss_ref.py IN.safetensors OUT.safetensors

Written from the definitions (docs/training.md and train/kd_loss.h), not from kd's gradient formulas: the loss is built from
log-softmaxes and the bucket distributions, and torch.autograd supplies the
gradients w.r.t. the hidden states and the LM head.

IN holds the shared inputs "hidden" [N, C], "head" [V, C], "labels" [N] (int32,
-100 = ignored), "teacher" [N, V], "teacher_ninf" [N, V] (some -inf logits),
"topk_ids" [N, k] (int32, -1 = padding), "topk_lp" [N, k] (log-probs at T = 1,
-inf = padding), and per case "<case>.opts" = [alpha, T, mode, div, ninf]
(mode 0 full, 1 topk_zero, 2 topk_tail; div 0 forward, 1 reverse; ninf 1 uses
"teacher_ninf"). OUT gets "<case>.loss", ".ce", ".kl", ".kl1" (shape [1]) and
"<case>.dh" [N, C], "<case>.dW" [V, C]; topk_tail cases also ".kl1prev", the T = 1
divergence under the previous topk_tail rule (student tempered token by token), after
checking here that the current rule equals it at T = 1 (see check_t1_matches_previous).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from kdref import load_safetensors, save_safetensors  # noqa: E402

TAIL_EPS = 1e-6
NEG_INF = float("-inf")


def kd_full(z, zt, T, reverse):
    """Per-row KL between softmax(zt/T) (teacher) and softmax(z/T) (student)."""
    lp = torch.log_softmax(z / T, dim=-1)
    lq = torch.log_softmax(zt / T, dim=-1)
    if reverse:
        return (lp.exp() * (lp - lq)).sum(-1)
    q = lq.exp()
    lq_safe = torch.where(q > 0, lq, torch.zeros_like(lq))      # 0·log 0 = 0
    return torch.where(q > 0, q * (lq_safe - lp), torch.zeros_like(lp)).sum(-1)


def kd_topk_zero(z, ids, lps, T):
    """Per-row forward KL against a top-k teacher with zero mass outside K (see kd_loss.h)."""
    ok = (ids >= 0) & (lps > NEG_INF)
    zero = torch.zeros_like(lps)
    ls = torch.log_softmax(z / T, dim=-1).gather(1, ids.clamp(min=0).long())   # student over the FULL vocabulary
    ls = torch.where(ok, ls, zero)
    lw = torch.where(ok, lps / T, torch.full_like(lps, NEG_INF))               # p_i^(1/T), in logs
    lq = lw - torch.logsumexp(lw, dim=-1, keepdim=True)
    lq = torch.where(ok, lq, zero)
    return torch.where(ok, lq.exp() * (lq - ls), zero).sum(-1)


def kd_topk_tail(z, ids, lps, T, reverse):
    """Per-row divergence over the k+1 buckets of topk_tail, straight from the definition in
    kd_loss.h: both sides' buckets at T = 1 (the student's tail = 1 - sum of its top-k
    probabilities), each bucket vector tempered as b^(1/T) / sum(b^(1/T)), then the KL."""
    N, V = z.shape
    ok = (ids >= 0) & (lps > NEG_INF)
    idx = ids.clamp(min=0).long()
    zero, one = torch.zeros_like(lps), torch.ones_like(lps)
    n_in_k = torch.zeros(N, V, dtype=torch.float64).scatter_add_(1, idx, ok.double()).gt(0).sum(-1)
    has_tail = n_in_k < V
    zr, onr = torch.zeros(N, dtype=torch.float64), torch.ones(N, dtype=torch.float64)

    # student buckets at T = 1
    sK = torch.where(ok, torch.softmax(z, dim=-1).gather(1, idx), zero)
    s_tail = 1.0 - sK.sum(-1)
    # teacher buckets at T = 1
    pK = torch.where(ok, lps.exp(), zero)
    mt = (1.0 - pK.sum(-1)).clamp(min=0.0)
    mt = mt.clamp(min=TAIL_EPS) if reverse else torch.where(mt > TAIL_EPS, mt, zr)   # forward: tiny tail = none
    mt = torch.where(has_tail, mt, zr)

    def temper(bK, bt, bt_on):
        # b^(1/T) / sum b^(1/T) over the k+1 buckets; empty slots (and a missing tail) get 0
        wK = torch.where(ok, torch.where(ok, bK, one).pow(1.0 / T), zero)
        wt = torch.where(bt_on, torch.where(bt_on, bt, onr).pow(1.0 / T), zr)
        Z = wK.sum(-1) + wt
        return wK / Z[:, None], wt / Z

    PK, Pt = temper(sK, s_tail, has_tail)
    qK, qt = temper(pK, mt, mt > 0)

    def xlogy_ratio(a, b, on):   # a·log(a/b) where on, else 0
        return torch.where(on, a * (torch.where(on, a, torch.ones_like(a)).log() -
                                    torch.where(on, b, torch.ones_like(b)).log()), torch.zeros_like(a))

    if reverse:
        return xlogy_ratio(PK, qK, ok).sum(-1) + xlogy_ratio(Pt, qt, has_tail)
    return xlogy_ratio(qK, PK, ok).sum(-1) + xlogy_ratio(qt, Pt, mt > 0)


def kd_topk_tail_previous(z, ids, lps, T, reverse):
    """The topk_tail rule before the bucket tempering (student softmax(z/T) token by token, a
    forward teacher tail <= 1e-6 kept in the normaliser but its term skipped). Only used to check
    that the current rule equals it at T = 1."""
    V = z.shape[-1]
    ok = (ids >= 0) & (lps > NEG_INF)
    zero = torch.zeros_like(lps)
    ls = torch.log_softmax(z / T, dim=-1).gather(1, ids.clamp(min=0).long())
    ls = torch.where(ok, ls, zero)
    lw = torch.where(ok, lps / T, torch.full_like(lps, NEG_INF))
    has_tail = ok.sum(-1) < V
    mt = (1.0 - torch.where(ok, lps.exp(), zero).sum(-1)).clamp(min=0.0)
    if reverse:
        mt = mt.clamp(min=TAIL_EPS)
    mt = torch.where(has_tail, mt, torch.zeros_like(mt))
    lwt = torch.where(mt > 0, mt.clamp(min=1e-300).log() / T, torch.full_like(mt, NEG_INF))
    lz = torch.logsumexp(torch.cat([lw, lwt[:, None]], dim=-1), dim=-1)
    lq = torch.where(ok, lw - lz[:, None], zero)
    lqt = torch.where(mt > 0, lwt - lz, torch.zeros_like(lz))
    ps = torch.where(ok, ls.exp(), zero)
    ms = 1.0 - ps.sum(-1)
    lms = ms.clamp(min=1e-300).log()
    if reverse:
        d = torch.where(ok, ps * (ls - lq), zero).sum(-1)
        return d + torch.where(has_tail, ms * (lms - lqt), torch.zeros_like(ms))
    d = torch.where(ok, lq.exp() * (lq - ls), zero).sum(-1)
    use_tail = has_tail & (mt > TAIL_EPS)
    return d + torch.where(use_tail, lqt.exp() * (lqt - lms), torch.zeros_like(ms))


def check_t1_matches_previous(z, ids, lps, reverse, case):
    """At T = 1 the current topk_tail rule equals the previous one: to rounding in every row, except
    forward rows whose teacher tail is in (0, 1e-6], where the previous rule kept it in the
    normaliser (D_prev = Q·D + Q·log Q, Q = 1 - m_t) and the difference is about m_t·(1 + D).
    Returns the mean previous divergence (the C test compares its kl_t1 with it)."""
    z = z.detach().clone().requires_grad_(True)
    d_new = kd_topk_tail(z, ids, lps, 1.0, reverse)
    (g_new,) = torch.autograd.grad(d_new.sum(), z)
    z2 = z.detach().clone().requires_grad_(True)
    d_old = kd_topk_tail_previous(z2, ids, lps, 1.0, reverse)
    (g_old,) = torch.autograd.grad(d_old.sum(), z2)
    ok = (ids >= 0) & (lps > NEG_INF)
    mt = 1.0 - torch.where(ok, lps.exp(), torch.zeros_like(lps)).sum(-1)
    tiny = (mt > 0) & (mt <= TAIL_EPS) & (ok.sum(-1) < z.shape[-1])
    if reverse:
        tiny = torch.zeros_like(tiny)
    dd = (d_new - d_old).abs().detach()
    dg = (g_new - g_old).abs().amax(-1)
    scale = 1 + d_old.detach().abs()
    tol = torch.where(tiny, 2e-6 * scale, 1e-10 * scale)
    gtol = torch.where(tiny, torch.full_like(dd, 2e-6), torch.full_like(dd, 1e-10) * max(1.0, float(g_old.abs().max())))
    print(f"kd_loss_ref: {case}: T = 1, current vs previous topk_tail rule: max |dD| {dd.max():.2e} "
          f"(rows with a forward tail <= 1e-6: {int(tiny.sum())}, max |dD| there "
          f"{dd[tiny].max() if tiny.any() else 0.0:.2e}), max |d grad| {dg.max():.2e}", file=sys.stderr)
    if not (bool((dd <= tol).all()) and bool((dg <= gtol).all())):
        sys.exit(f"kd_loss_ref: {case}: the topk_tail rule at T = 1 differs from the previous one")
    return d_old.detach().mean()


def divergence(z, src, opts, T, valid):
    """Per-valid-row divergence; teacher rows of ignored tokens are dropped first (they may hold garbage)."""
    mode, reverse, ninf = int(opts[2]), bool(opts[3]), bool(opts[4])
    if mode == 0:
        zt = torch.tensor(src["teacher_ninf" if ninf else "teacher"], dtype=torch.float64)[valid]
        return kd_full(z, zt, T, reverse)
    ids = torch.tensor(src["topk_ids"])[valid]
    lps = torch.tensor(src["topk_lp"], dtype=torch.float64)[valid]
    if mode == 1:
        return kd_topk_zero(z, ids, lps, T)
    return kd_topk_tail(z, ids, lps, T, reverse)


def main():
    src = load_safetensors(sys.argv[1])
    cases = sorted({k.split(".")[0] for k in src if k.endswith(".opts")})
    labels = torch.tensor(src["labels"]).long()
    valid = labels != -100
    nv = valid.sum()
    out = {}
    for case in cases:
        opts = [float(x) for x in src[f"{case}.opts"]]
        alpha, T = opts[0], opts[1]
        h = torch.tensor(src["hidden"], dtype=torch.float64, requires_grad=True)
        W = torch.tensor(src["head"], dtype=torch.float64, requires_grad=True)
        z = (h @ W.T)[valid]
        ce = torch.nn.functional.cross_entropy(z, labels[valid], reduction="none")
        kl = divergence(z, src, opts, T, valid)
        loss = ((1 - alpha) * ce + alpha * T * T * kl).sum() / nv
        loss.backward()
        with torch.no_grad():
            kl1 = divergence(z, src, opts, 1.0, valid)
        out[f"{case}.loss"] = loss.detach().reshape(1).numpy()
        out[f"{case}.ce"] = ce.detach().mean().reshape(1).numpy()
        out[f"{case}.kl"] = kl.detach().mean().reshape(1).numpy()
        out[f"{case}.kl1"] = kl1.mean().reshape(1).numpy()
        out[f"{case}.dh"] = h.grad.numpy()
        out[f"{case}.dW"] = W.grad.numpy()
        if int(opts[2]) == 2:
            ids = torch.tensor(src["topk_ids"])[valid]
            lps = torch.tensor(src["topk_lp"], dtype=torch.float64)[valid]
            out[f"{case}.kl1prev"] = check_t1_matches_previous(z, ids, lps, bool(opts[3]), case).reshape(1).numpy()
    save_safetensors(sys.argv[2], out)


if __name__ == "__main__":
    main()
