"""When to try a failed step again: exponential backoff with full jitter, honouring Retry-After."""

from __future__ import annotations

import random

from grantflow.definitions.document import Jitter, RetryPolicy


def backoff_seconds(
    policy: RetryPolicy,
    failed_attempts: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `failed_attempts`-th failure (1-based).

    Full jitter draws uniformly from [0, capped exponential]; a server's Retry-After is a floor,
    since retrying earlier than it asked would only be refused again.
    """
    base = policy.initial_backoff.total_seconds() * policy.multiplier ** (failed_attempts - 1)
    capped = min(base, policy.max_backoff.total_seconds())
    delay = (rng or random).uniform(0, capped) if policy.jitter == Jitter.FULL else capped
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
