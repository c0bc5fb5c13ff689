"""Error bounds for the head-averaged CLS attention row, derived from float32 arithmetic.

Used by tests that compare our CLS-row capture with the model's own eager attention. Nothing
here is a measured constant: every term follows from the operations both computations do.

Notation: ``u = 2**-24`` is float32's unit roundoff (machine epsilon 1.19e-7 = 2u) and
``gamma(n) = n u / (1 - n u)``. A float32 dot product of n terms, in ANY summation order or
blocking (so whatever GEMM kernel, batch shape or SDPA/eager path ran it), satisfies
``|fl(x . y) - x . y| <= gamma(n) * sum_i |x_i y_i|`` (Higham, Accuracy and Stability of
Numerical Algorithms, 2nd ed., eq. 3.5).

Both computations of one head's CLS row do, from the last layer's normalised input ``h[T, D]``:
``q = W_q h_0 + b_q`` and ``k_j = W_k h_j + b_k`` (dot products of D + 1 terms), the logit
``s_j = scale * (q . k_j)`` (hd terms, then one multiplication), and ``softmax(s)``. If the two
runs' inputs differ by ``dh`` (other layers ran SDPA vs eager, or another batch shape), then

    |dq| <= |W_q| |dh_0| + 2 gamma(D+1) (|W_q| |h_0| + |b_q|)      (input change + both roundings)
    |dk_j| <= |W_k| |dh_j| + 2 gamma(D+1) (|W_k| |h_j| + |b_k|)
    |ds_j| <= scale * sum_d (|dq_d| (|k_jd| + |dk_jd|) + |q_d| |dk_jd|)
              + 2 (gamma(hd) + u) * scale * sum_d (|q_d| + |dq_d|) (|k_jd| + |dk_jd|)

Softmax is shift invariant and ``p_j / p'_j = exp(s_j - s'_j) * Z' / Z``, so logits that move by
at most ``delta = max_j |ds_j|`` change every probability by a factor within ``exp(+-2 delta)``.
One float32 softmax (subtract the max, exp, sum T terms, divide) rounds each p_j by at most a
relative ``rho_j = (|s_j - max s| + 3) u + gamma(T)`` (the subtraction's rounding is amplified
by exp; exp and the division are correctly rounded to within 1 ulp each). Two runs, so

    |p_j - p'_j| <= p_j * (exp(2 delta + 2 rho_j) - 1)

and averaging H heads in float32 adds at most ``2 gamma(H + 1)`` relative (both runs).
"""

from __future__ import annotations

import torch

U = 2.0**-24  # float32 unit roundoff


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u) for float32."""
    return n * U / (1 - n * U)


def cls_row_bound(
    hidden_ref: torch.Tensor, hidden_other: torch.Tensor, site, attention_ref: torch.Tensor
) -> torch.Tensor:
    """Bound ``[B, T]`` on |head-mean CLS row of one run - head-mean CLS row of the reference|.

    ``hidden_ref`` / ``hidden_other``: ``[B, T, D]`` the last layer's normalised attention input in
    the reference (eager) run and in the run under test. ``site``: that layer's AttentionSite (q/k
    projections, heads, scale). ``attention_ref``: ``[B, H, T]`` the reference CLS rows
    (``attentions[-1][:, :, 0]``). Computed in float64, so the bound itself does not round.
    """
    h = hidden_ref.detach().double()
    dh = (hidden_other.detach().double() - h).abs()
    batch, tokens, width = h.shape
    heads, head_dim = site.num_heads, site.head_dim
    wq, wk = site.q.weight.detach().double(), site.k.weight.detach().double()
    bq = torch.zeros(wq.shape[0], dtype=torch.float64) if site.q.bias is None else site.q.bias.detach().double()
    bk = torch.zeros(wk.shape[0], dtype=torch.float64) if site.k.bias is None else site.k.bias.detach().double()
    g_proj = gamma(width + 1)
    q = h[:, 0] @ wq.T + bq  # [B, H*hd]
    k = h @ wk.T + bk  # [B, T, H*hd]
    dq = dh[:, 0] @ wq.abs().T + 2 * g_proj * (h[:, 0].abs() @ wq.abs().T + bq.abs())
    dk = dh @ wk.abs().T + 2 * g_proj * (h.abs() @ wk.abs().T + bk.abs())

    def per_head(x: torch.Tensor) -> torch.Tensor:  # [..., H*hd] -> [..., H, hd]
        return x.reshape(*x.shape[:-1], heads, head_dim)

    q, dq = per_head(q), per_head(dq)  # [B, H, hd]
    k, dk = per_head(k), per_head(dk)  # [B, T, H, hd]
    qa, ka = q.abs(), k.abs()
    change = torch.einsum("bhd,bthd->bht", dq, ka + dk) + torch.einsum("bhd,bthd->bht", qa, dk)
    magnitude = torch.einsum("bhd,bthd->bht", qa + dq, ka + dk)
    ds = site.scale * change + 2 * (gamma(head_dim) + U) * site.scale * magnitude  # [B, H, T]
    delta = ds.amax(dim=-1, keepdim=True)  # [B, H, 1]
    logits = site.scale * torch.einsum("bhd,bthd->bht", q, k)
    rho = ((logits.amax(dim=-1, keepdim=True) - logits).abs() + 3) * U + gamma(tokens)
    p = attention_ref.detach().double()
    per_head_bound = p * torch.expm1(2 * delta + 2 * rho)  # [B, H, T]
    return per_head_bound.mean(dim=1) + 2 * gamma(heads + 1) * p.mean(dim=1)
