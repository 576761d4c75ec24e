"""The offline PPO objective, every term named as in the equation (cf. CleanRL's ppo.py).

    logratio  = log pi_theta(a|s) - log pi_old(a|s)          per completion token
    ratio     = exp(logratio)
    pg_loss1  = -A * ratio
    pg_loss2  = -A * clip(ratio, 1 - eps, 1 + eps)
    pg_loss   = mean(max(pg_loss1, pg_loss2))
    kl_penalty = k1 or k3 of (pi_theta, pi_ref) at the logged tokens
    loss      = pg_loss + beta * kl_penalty - c_ent * entropy

Means are over each sequence's completion tokens, then over sequences, so every step weighs
the same whatever its length. Prompt tokens are masked out of every term.

Which KL is which: ``kl_penalty`` is Schulman's k1/k3 estimator evaluated at the *logged*
tokens, which the behaviour policy wrote, not pi_theta; its expectation is therefore
E_{a ~ pi_beta}[k(pi_theta, pi_ref)], not KL(pi_theta || pi_ref) (they agree only while
pi_theta = pi_beta). ``exact_kl`` is the true KL(pi_theta || pi_ref) at each completion
position, summed over the vocabulary from both models' logits: the number to read.
``approx_kl`` is CleanRL's estimate of KL(pi_old || pi_theta), the trust region's drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's masked tokens, then over rows."""
    per_row = (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_row.mean()


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str
) -> torch.Tensor:
    """Schulman's k1 (log pi_theta/pi_ref) or k3 (r - log r - 1, r = pi_ref/pi_theta) at the
    given tokens. An unbiased estimate of KL(pi_theta || pi_ref) only when the tokens are
    sampled from pi_theta; on logged tokens (written by pi_beta) it is the penalty the loss
    uses, not that KL (see ``exact_kl``)."""
    log_r = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return torch.exp(log_r) - log_r - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def exact_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(pi_theta || pi_ref) at every position, exact: sum_v p(v) (log p(v) - log q(v)) over
    the vocabulary. ``logp``, ``ref_logp``: log-softmaxed [batch, tokens, vocab]."""
    return (logp.exp() * (logp - ref_logp)).sum(dim=-1)


def adaptive_kl_coef(kl_coef: float, kl: float, kl_target: float) -> float:
    """PPO's adaptive KL penalty (Schulman et al. 2017, sec. 4): halve beta when the measured
    KL is below target / 1.5, double it above target * 1.5, else keep it."""
    if kl < kl_target / 1.5:
        return kl_coef / 2
    if kl > kl_target * 1.5:
        return kl_coef * 2
    return kl_coef


@dataclass
class PPOStats:
    loss: float
    policy_loss: float
    kl_penalty: float
    approx_kl: float
    clipfrac: float
    ratio: float
    ratio_min: float
    ratio_max: float
    entropy: float


def ppo_loss(
    *,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
    kl_estimator: str,
    entropy_coef: float,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, PPOStats]:
    """Clipped surrogate + KL penalty to the reference (+ optional entropy bonus); the
    penalty is the k1/k3 estimator at the logged tokens (module docstring).

    Keyword-only: three log-prob tensors of one shape are easy to swap by position. The
    coefficients have no defaults here; they come from ``training.ppo``
    (``PPOSettings`` in ``spark_core/config/training.py``).
    Shapes: log-probs, entropy and mask [batch, tokens]; advantages [batch] (one per step)."""
    mask = mask.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype)[:, None]
    logratio = logprobs - old_logprobs
    ratio = torch.exp(logratio)
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    kl_penalty = masked_mean(kl_per_token(logprobs, ref_logprobs, kl_estimator), mask)
    loss = pg_loss + kl_coef * kl_penalty
    entropy_mean = masked_mean(entropy, mask) if entropy is not None else torch.zeros(())
    if entropy is not None and entropy_coef:
        loss = loss - entropy_coef * entropy_mean
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - logratio, mask)
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip_eps).to(mask.dtype), mask)
        mean_ratio = masked_mean(ratio, mask)
        live = ratio[mask.bool()]
    stats = PPOStats(
        loss=loss.item(),
        policy_loss=pg_loss.item(),
        kl_penalty=kl_penalty.item(),
        approx_kl=approx_kl.item(),
        clipfrac=clipfrac.item(),
        ratio=mean_ratio.item(),
        ratio_min=live.min().item() if live.numel() else 1.0,
        ratio_max=live.max().item() if live.numel() else 1.0,
        entropy=entropy_mean.item(),
    )
    return loss, stats


def next_token_logp(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax (fp32) of the logits that predict each next token: aligned with
    ``input_ids[:, 1:]``."""
    return torch.log_softmax(logits[:, :-1].float(), dim=-1)


def token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token and the policy's entropy at that position.

    Returns tensors aligned with ``input_ids[:, 1:]``."""
    logp = next_token_logp(logits)
    token_logp = torch.gather(logp, -1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return token_logp, entropy
