"""How a grid operator advances a state in time: one call, autoregressive, or space-time.

A state is the last ``history`` snapshots of C channels, stacked step-major as channels:
``x`` (B, history * C, *spatial), oldest first (the layout of
:class:`~simsurrogate.data.well.WellWindows` when input and target fields are the same).
Each mode turns one model call into a block of predicted steps (B, n * C, *spatial):

- ``"step"``: the model's output is the block (n = out_channels / C steps at once);
- ``"autoregressive"``: the model predicts one step (out_channels = C), which is pushed onto
  the history for the next call (FNO-2D of the FNO paper's Navier–Stokes experiment);
- ``"space_time"``: the history is broadcast along a new last axis of n time slices and a
  model over (*spatial, t) predicts all n steps at once, (B, C, *spatial, n) (FNO-3D).

:func:`unroll` chains blocks until the requested number of steps, each block starting from
the last ``history`` snapshots, given or predicted. The same code serves training (the task
unrolls the training horizon) and rollout engines (which stream the steps to disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

MODES = ("step", "autoregressive", "space_time")


def check_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def push(state: Tensor, new: Tensor) -> Tensor:
    """Drop the oldest snapshots of ``state`` (B, H * C, *S) and append ``new`` (B, n * C, *S)."""
    return torch.cat([state, new], dim=1)[:, new.shape[1] :]


def space_time_input(x: Tensor, n: int) -> Tensor:
    """``x`` (B, H * C, *S) repeated along a new last time axis: (B, H * C, *S, n)."""
    return x.unsqueeze(-1).expand(*x.shape, n)


def space_time_output(y: Tensor) -> Tensor:
    """(B, C, *S, n) space-time prediction -> (B, n * C, *S), step-major channels."""
    return y.movedim(-1, 1).flatten(1, 2)


def state_channels(x: Tensor, history: int) -> int:
    """Channels C per snapshot of a state ``x`` (B, history * C, *S)."""
    if history < 1 or x.shape[1] % history:
        raise ValueError(
            f"a state of {x.shape[1]} channels does not hold {history} snapshots of equal size"
        )
    return x.shape[1] // history


def unroll(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    steps: int,
    mode: str,
    history: int,
    block: int | None = None,
) -> Iterator[Tensor]:
    """Predict ``steps`` snapshots after the state ``x`` (B, history * C, *S), one at a time.

    Yields each predicted snapshot (B, C, *S) in order. ``block`` is the number of time slices
    per space-time call (default: all ``steps`` in one call); the other modes take the block
    size from the model's output. The model is called lazily: the next call happens when the
    caller asks for the first snapshot it produces.
    """
    check_mode(mode)
    c = state_channels(x, history)
    state, done = x, 0
    while done < steps:
        if mode == "space_time":
            n = min(block or steps, steps - done)
            out = space_time_output(model(space_time_input(state, n)))
        else:
            out = model(state)
        if out.shape[1] == 0 or out.shape[1] % c:
            raise ValueError(
                f"the model's output has {out.shape[1]} channels, not a whole number of "
                f"snapshots of the state's {c} channels ({mode!r} mode)"
            )
        if mode == "autoregressive" and out.shape[1] != c:
            raise ValueError(
                f"autoregressive mode needs one snapshot ({c} channels) per model call, "
                f"got {out.shape[1]}"
            )
        yield from out.split(c, dim=1)[: steps - done]
        done += out.shape[1] // c
        state = push(state, out)
