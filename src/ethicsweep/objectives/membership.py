"""Membership inference: how well a loss-threshold attacker tells training rows (members)
from held-out rows (non-members).

The attacker scores a row by −(its cross-entropy loss): a model that memorized its
training rows gives them lower losses. Members and non-members are compared in equal
numbers. ``mia_auc`` is the attack's ROC AUC (0.5: no better than chance),
``mia_advantage`` the largest TPR − FPR over thresholds, ``mia_tpr_at_1pct_fpr`` the
largest TPR at an FPR of at most 1%.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

MIA_METRICS = ("mia_auc", "mia_advantage", "mia_tpr_at_1pct_fpr")


def per_example_bce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each row, in nats, from logits of P(y=1) (stable in float64):
    log(1 + e^z) − y·z."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    return np.logaddexp(0.0, z) - np.asarray(y, dtype=np.float64).ravel() * z


def equal_samples(n_members: int, n_nonmembers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of as many members as non-members: every row of the smaller set and a
    seeded sample, without replacement, of the larger one."""
    rng = np.random.default_rng(seed)
    m = min(n_members, n_nonmembers)

    def pick(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, size=m, replace=False)) if n > m else np.arange(n)

    return pick(n_members), pick(n_nonmembers)


def loss_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> dict[str, float]:
    """The loss-threshold attack's ``mia_*`` metrics (score = −loss; members are positives).

    Every metric is NaN when either set is empty.
    """
    member_losses = np.asarray(member_losses, dtype=np.float64).ravel()
    nonmember_losses = np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if not len(member_losses) or not len(nonmember_losses):
        return dict.fromkeys(MIA_METRICS, float("nan"))
    is_member = np.r_[np.ones(len(member_losses)), np.zeros(len(nonmember_losses))]
    score = -np.r_[member_losses, nonmember_losses]
    # every threshold is kept: dropping collinear points could drop the best TPR at FPR <= 1%
    fpr, tpr, _ = roc_curve(is_member, score, drop_intermediate=False)
    return {
        "mia_auc": float(roc_auc_score(is_member, score)),
        "mia_advantage": float(np.max(tpr - fpr)),
        "mia_tpr_at_1pct_fpr": float(np.max(tpr[fpr <= 0.01])),
    }
