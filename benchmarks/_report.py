"""What the benchmark reports share: a grid of per-epsilon panels, and the files under ``--out``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["finish_panels", "write_report"]


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


def write_report(
    result: dict[str, Any],
    *,
    out_dir: Path | None,
    name: str,
    plot: Callable[[dict[str, Any], Path], None],
    started: float,
) -> dict[str, Any]:
    """Stamp ``timing.total_s`` and, with ``out_dir``, write ``<name>.png`` and ``<name>.json`` there.

    The total includes the plot; only the JSON write is outside it. Returns ``result``, with
    ``files`` naming what was written.
    """
    if out_dir is None:
        result["timing"]["total_s"] = time.perf_counter() - started
        return result
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    figure, data = directory / f"{name}.png", directory / f"{name}.json"
    result["files"] = {"plot": str(figure), "json": str(data)}
    plot(result, figure)
    result["timing"]["total_s"] = time.perf_counter() - started
    data.write_text(json.dumps(result, indent=2, sort_keys=True, allow_nan=False))
    return result
