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

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

U = 2.0**-24  # float32 unit roundoff


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u) for float32."""
    return n * U / (1 - n * U)


def cls_row_bound(
    hidden_ref: torch.Tensor, hidden_other: torch.Tensor, site, attention_ref: torch.Tensor, head_mean: bool = True
) -> torch.Tensor:
    """Bound ``[B, T]`` on |head-mean CLS row of one run - head-mean CLS row of the reference|
    (``[B, H, T]`` per head with ``head_mean=False``).

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
    if not head_mean:
        return per_head_bound
    return per_head_bound.mean(dim=1) + 2 * gamma(heads + 1) * p.mean(dim=1)


@contextlib.contextmanager
def capture_attention_inputs(encoder, layers: Sequence[int] = (-1,)) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Keep a float32 copy of what each listed layer's attention receives (``[B, T, D]`` per forward call).

    Yields ``{layer: [tensor per forward call]}``; the hooks are removed on exit.
    """
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    handles = []
    for layer in layers:
        def hook(module, args, kwargs, store=captured[layer]):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            store.append(hidden.detach().float().clone())

        handles.append(encoder.attention_sites[layer].module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def cls_rows_float64(hidden: torch.Tensor, site) -> torch.Tensor:
    """Per-head CLS rows ``[B, H, T]`` of softmax(scale q k^T) from the layer input ``[B, T, D]``, in float64."""
    h = hidden.detach().double()
    q = h[:, 0] @ site.q.weight.detach().double().T
    k = h @ site.k.weight.detach().double().T
    if site.q.bias is not None:
        q = q + site.q.bias.detach().double()
        k = k + site.k.bias.detach().double()
    q = q.reshape(q.shape[0], site.num_heads, site.head_dim)
    k = k.reshape(k.shape[0], k.shape[1], site.num_heads, site.head_dim)
    return torch.softmax(site.scale * torch.einsum("bhd,bthd->bht", q, k), dim=-1)


def batch_map_bound(hidden_a: torch.Tensor, hidden_b: torch.Tensor, site, prefix: int) -> torch.Tensor:
    """Bound ``[B, N]`` on |map of run a - map of run b| (head-mean CLS rows over the patch columns) from the
    two runs' inputs to that layer (:func:`cls_row_bound` with the float64 rows of run a as reference, plus
    run a's own float32 rounding of those rows, bounded the same way with dh = 0)."""
    reference = cls_rows_float64(hidden_a, site)
    to_other = cls_row_bound(hidden_a, hidden_b, site, reference)
    own_rounding = cls_row_bound(hidden_a, hidden_a, site, reference)
    return (to_other + own_rounding)[:, prefix:]


def metric_bounds(maps: np.ndarray | torch.Tensor, eps: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Bounds ``{metric: [B]}`` on how far each of the seed's six metrics can move when every entry of
    ``maps[B, N]`` moves by at most ``eps[B, N]`` (as :func:`attn_assets.core.metrics.attention_metrics`
    computes them, in float64).

    With S = sum(a) + 1e-8 and E = sum(eps): q = a / S moves by dq <= (eps S + a E) / (S (S - E)).
    Entropy sum(-q log(q + 1e-10)): mean value theorem, |d/dq| <= |log(q +- dq + 1e-10)| + 1 on the interval.
    Top-k share: a sum of k order statistics moves by at most the k largest dq. Max: max eps. Population
    std is a seminorm / sqrt(N): it moves by at most rms(eps). Above-mean count: only patches within
    eps + E/N of the mean can cross it. Float64 evaluation adds at most 64 N 2**-53 (1 + |value|).
    """
    a = torch.as_tensor(maps, dtype=torch.float64).reshape(len(maps), -1)
    e = torch.as_tensor(eps, dtype=torch.float64).reshape(a.shape)
    n = a.shape[1]
    s = a.sum(dim=1, keepdim=True) + 1e-8
    big_e = e.sum(dim=1, keepdim=True)
    q = a / s
    dq = (e * s + a * big_e) / (s * (s - big_e))
    lo = (q - dq).clamp(min=0) + 1e-10
    hi = q + dq + 1e-10
    slope = torch.maximum(lo.log().abs(), hi.log().abs()) + 1
    ranked_dq = torch.sort(dq, dim=1, descending=True).values
    mean = a.mean(dim=1, keepdim=True)
    crossing = ((a - mean).abs() <= e + big_e / n).sum(dim=1).double()
    f64 = 64 * n * 2.0**-53
    bounds = {
        "attention_entropy": (dq * slope).sum(dim=1) + f64 * (1 + float(np.log(n))),
        "attention_max": e.amax(dim=1) + f64,
        "attention_concentration_top10": ranked_dq[:, : int(n * 0.1)].sum(dim=1) + f64,
        "attention_concentration_top25": ranked_dq[:, : int(n * 0.25)].sum(dim=1) + f64,
        "num_high_attention_patches": crossing,
        "attention_spread": e.pow(2).mean(dim=1).sqrt() + f64,
    }
    return {name: value.numpy() for name, value in bounds.items()}
