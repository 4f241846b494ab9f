"""Errors raised by rollout engines."""


class RolloutError(RuntimeError):
    """A rollout cannot go on: a state went non-finite or the model cannot advance it."""
