"""The plots of learnt missing processes: files written, bad column choices named."""

import pytest
from helpers import MIXED_FAST, mixed_frame, with_holes

from notmiwae_fast import NotMIWAEImputer
from notmiwae_fast.experiments.plots import plot_category_missingness


def test_category_plot_draws_each_categorical_column(tmp_path):
    imputer = NotMIWAEImputer(**{**MIXED_FAST, "max_iter": 10}).fit(with_holes(mixed_frame(80)))
    path = plot_category_missingness(imputer, path=tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_category_missingness(imputer, ["level"], path=tmp_path / "one.png")
    with pytest.raises(ValueError, match="'columns'.*'x'"):
        plot_category_missingness(imputer, ["x"], path=tmp_path / "bad.png")
