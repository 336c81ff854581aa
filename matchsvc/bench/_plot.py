"""What the benchmark figures share: a grid of per-epsilon panels with one legend for all."""

from __future__ import annotations

from typing import Any

__all__ = ["finish_panels"]


def finish_panels(figure: Any, axes: Any, *, used: int, columns: int, ylabel: str, legend_columns: int) -> None:
    """Label the first column, hide unused panels, and gather every panel's legend entries once.

    ``axes`` is the flat array of the grid's matplotlib axes, of which the first ``used`` hold
    data; the legend goes below the panels (the figure must use the "constrained" layout).
    """
    for ax in axes[:used:columns]:
        ax.set_ylabel(ylabel)
    for ax in axes[used:]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}
    for ax in axes[:used]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(
        list(handles.values()), list(handles), loc="outside lower center", ncols=min(legend_columns, len(handles))
    )
