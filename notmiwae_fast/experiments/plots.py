"""A plot of a learnt missing process: p(missing | value) per feature (matplotlib, Agg
backend, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .._common.io import write_atomic

__all__ = ["plot_missing_process", "plot_category_missingness"]


def plot_missing_process(
    imputer,
    X: np.ndarray,
    columns: Sequence[int],
    thresholds: Optional[Sequence[float]] = None,
    names: Optional[Sequence[str]] = None,
    path: Union[str, Path] = "missing_process.png",
) -> Path:
    """Saves a grid of panels, one per feature in ``columns``: the learnt probability
    of the value being missing against the value (the other features held at their
    means), with the true threshold as a dashed line.

    Args:
        imputer: a fitted :class:`~notmiwae_fast.NotMIWAEImputer`.
        X: [N, D] complete data (original units) giving each feature's range.
        columns: indices of the features to draw.
        thresholds: the true threshold of each drawn feature (None: not drawn).
        names: the D feature names (default ``feature j``).
        path: the PNG file written (atomically).
    Returns:
        the path written.
    """
    X = np.asarray(X, dtype=np.float64)
    columns = list(columns)
    n_grid = 200
    fig, axes, n_cols = _panels(len(columns))
    for panel, j in enumerate(columns):
        ax = axes[panel // n_cols][panel % n_cols]
        grid = np.tile(X.mean(axis=0), (n_grid, 1))
        grid[:, j] = np.linspace(X[:, j].min(), X[:, j].max(), n_grid)
        prob = imputer.missing_probability(grid)[:, j]
        ax.plot(grid[:, j], prob, color="C0", label="learnt p(missing | x)")
        if thresholds is not None:
            ax.axvline(thresholds[panel], color="C3", linestyle="--", label="true threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(names[j] if names is not None else f"feature {j}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.supxlabel("value")
    fig.supylabel("probability of being missing")
    return _save(fig, axes, len(columns), path)


def plot_category_missingness(
    imputer, columns: Optional[Sequence[str]] = None, path: Union[str, Path] = "categories.png"
) -> Path:
    """Saves one bar chart per categorical column: the learnt probability that a value
    of each category goes missing (a mixed-table NotMIWAEImputer's
    ``missing_process_``).

    Args:
        imputer: a NotMIWAEImputer fitted on a DataFrame with categorical columns.
        columns: the column names to draw (default: every categorical column).
        path: the PNG file written (atomically).
    Returns:
        the path written.
    """
    learnt = getattr(imputer, "missing_process_", {})
    categorical = [c for c, v in learnt.items() if v.get("kind") == "categorical"]
    columns = categorical if columns is None else list(columns)
    unknown = [c for c in columns if c not in categorical]
    if not columns or unknown:
        raise ValueError(
            f"argument 'columns': the imputer's categorical columns are {categorical}; "
            f"got {unknown or 'none'}"
        )
    fig, axes, n_cols = _panels(len(columns))
    for panel, name in enumerate(columns):
        ax = axes[panel // n_cols][panel % n_cols]
        p = learnt[name]["p_missing"]
        ax.bar(range(len(p)), list(p.values()), color="C0")
        ax.set_xticks(range(len(p)), list(p), rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
    fig.supylabel("probability of being missing")
    return _save(fig, axes, len(columns), path)


def _panels(n: int):
    """A figure with a grid of at least n panels (5 a row): (figure, axes, columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = min(5, max(1, n))
    n_rows = max(1, math.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.6 * n_rows), squeeze=False)
    return fig, axes, n_cols


def _save(fig, axes, used: int, path: Union[str, Path]) -> Path:
    """Hides the unused panels and writes the figure to ``path`` atomically, in the
    format its suffix names (matplotlib's default without one); closes the figure."""
    import matplotlib.pyplot as plt

    n_cols = len(axes[0])
    for panel in range(used, len(axes) * n_cols):
        axes[panel // n_cols][panel % n_cols].axis("off")
    fig.tight_layout()
    path = Path(path)
    try:
        write_atomic(
            path, lambda f: fig.savefig(f, format=path.suffix[1:].lower() or None, dpi=110)
        )
    finally:
        plt.close(fig)
    return path
