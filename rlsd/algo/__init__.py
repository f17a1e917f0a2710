"""Pure-torch RLSD algorithm core: advantages, token credit, losses, log-probs.

No I/O, logging or file access lives here; trainers import these functions and pick
estimators and losses by config name through :mod:`rlsd.algo.registry`.
"""

from rlsd.algo.advantages import (
    GRPO_STD_EPS,
    dr_grpo_estimator,
    grpo_advantages,
    grpo_estimator,
)
from rlsd.algo.aggregation import AGG_MODES, aggregate_loss, masked_mean, masked_sum
from rlsd.algo.credit import (
    lambda_schedule,
    rlsd_credit_stats,
    rlsd_token_advantages,
    rlsd_token_weights,
)
from rlsd.algo.logprobs import token_logprobs_from_hidden, token_logprobs_from_logits
from rlsd.algo.opsd import generalized_jsd, opsd_jsd_loss
from rlsd.algo.ppo import ppo_clip_loss
from rlsd.algo.registry import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    AdvantageEstimator,
    PolicyLoss,
    get_advantage_estimator,
    get_policy_loss,
    register_advantage_estimator,
    register_policy_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "GRPO_STD_EPS",
    "POLICY_LOSSES",
    "AdvantageEstimator",
    "PolicyLoss",
    "aggregate_loss",
    "dr_grpo_estimator",
    "generalized_jsd",
    "get_advantage_estimator",
    "get_policy_loss",
    "grpo_advantages",
    "grpo_estimator",
    "lambda_schedule",
    "masked_mean",
    "masked_sum",
    "opsd_jsd_loss",
    "ppo_clip_loss",
    "register_advantage_estimator",
    "register_policy_loss",
    "rlsd_credit_stats",
    "rlsd_token_advantages",
    "rlsd_token_weights",
    "token_logprobs_from_hidden",
    "token_logprobs_from_logits",
]
