"""Ground-truth simulators that generate training data."""
