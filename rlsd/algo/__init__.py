"""Pure-torch RLSD algorithm core: advantages, token credit, losses, log-probs.

No I/O, logging or file access lives here. Trainers pick a training method by config name
through :mod:`rlsd.algo.methods` (``get_method``), which says what teacher pass it needs and
how its loss is formed, and an advantage estimator through :mod:`rlsd.algo.registry`.
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
from rlsd.algo.methods import (
    METHODS,
    LossInputs,
    LossOutput,
    Method,
    MethodSettings,
    TeacherOutput,
    TeacherPass,
    get_method,
    method_names,
    register_method,
)
from rlsd.algo.opsd import generalized_jsd, opsd_jsd_loss
from rlsd.algo.ppo import ppo_clip_loss
from rlsd.algo.registry import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    get_advantage_estimator,
    register_advantage_estimator,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "GRPO_STD_EPS",
    "METHODS",
    "AdvantageEstimator",
    "LossInputs",
    "LossOutput",
    "Method",
    "MethodSettings",
    "TeacherOutput",
    "TeacherPass",
    "aggregate_loss",
    "dr_grpo_estimator",
    "generalized_jsd",
    "get_advantage_estimator",
    "get_method",
    "grpo_advantages",
    "grpo_estimator",
    "lambda_schedule",
    "masked_mean",
    "masked_sum",
    "method_names",
    "opsd_jsd_loss",
    "ppo_clip_loss",
    "register_advantage_estimator",
    "register_method",
    "rlsd_credit_stats",
    "rlsd_token_advantages",
    "rlsd_token_weights",
    "token_logprobs_from_hidden",
    "token_logprobs_from_logits",
]
