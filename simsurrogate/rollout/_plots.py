"""Plot helpers shared by the rollout reports: headless pyplot, error curves, GIF writing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve(ax, per_step: dict[str, list[float]], ylabel: str, title: str) -> None:
    """One log-scale line per name of an error against model step (1, 2, ...)."""
    for name, values in per_step.items():
        if values:
            ax.semilogy(np.arange(1, len(values) + 1), values, label=name)
    ax.set_xlabel("model steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(per_step.values()):
        ax.set_title(title)
        ax.legend()
    else:
        ax.set_title("no ground truth for these steps")


def curve_only(per_step: dict[str, list[float]], ylabel: str, title: str, path: Path) -> None:
    """A figure holding only :func:`curve`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    curve(ax, per_step, ylabel, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(
    plots: Any,
    per_step: dict[str, list[float]],
    labels: tuple[str, str],
    steps: int,
    max_frames: int,
    out: Path,
) -> None:
    """``rollout.png`` and ``rollout.gif`` from a report's plotter (``ok``, ``figure``,
    ``animation``, ``close``), or only the error curve where it cannot draw the fields; closes
    the plotter."""
    try:
        if plots.ok:
            plots.figure(steps, per_step, out / "rollout.png")
            plots.animation(steps, max_frames, out / "rollout.gif")
        else:
            curve_only(per_step, *labels, out / "rollout.png")
    finally:
        plots.close()


def panel_animation(
    path: Path,
    frames: Sequence[int],
    titles: Sequence[str],
    figsize: tuple[float, float],
    new_image: Callable[[Any, int], Any],
    panels: Callable[[int], Sequence[np.ndarray | None]],
    heading: Callable[[int], str],
    update: Callable[[Any, np.ndarray], None],
) -> None:
    """A GIF of side-by-side panels (e.g. prediction | truth | error), one frame per step k.

    ``new_image(ax, i)`` draws panel i's artist once; per frame, ``panels(k)`` gives each
    panel's values (None: no ground truth, shown as a note) and ``update(artist, values)``
    sets them in place, far cheaper than drawing new artists every frame.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(titles), figsize=figsize)
    images, notes = [], []
    for i, (ax, title) in enumerate(zip(axes, titles, strict=True)):
        images.append(new_image(ax, i))
        notes.append(
            ax.text(
                0.5,
                0.5,
                "no ground truth",
                ha="center",
                va="center",
                transform=ax.transAxes,
                visible=False,
            )
        )
        ax.set_title(title, fontsize=9)
    text = fig.suptitle("", fontsize=10)
    fig.tight_layout()

    def draw(k: int) -> None:
        for image, note, values in zip(images, notes, panels(k), strict=True):
            image.set_visible(values is not None)
            note.set_visible(values is None)
            if values is not None:
                update(image, values)
        text.set_text(heading(k))

    write_gif(fig, path, frames, draw)


def write_gif(
    fig, path: Path, frames: Sequence[int], draw: Callable[[int], None], fps: int = 10
) -> None:
    """Animate ``fig`` into a GIF (pillow): ``draw(k)`` updates the artists for each frame k."""
    from matplotlib import animation

    writer = animation.PillowWriter(fps=fps)
    with writer.saving(fig, path, dpi=72):  # one draw per frame
        for k in frames:
            draw(k)
            writer.grab_frame()
    pyplot().close(fig)
