"""Data loaders: the six UCI CSVs (skipped where ../shared/data/uci is absent) and
breast cancer from scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from notmiwae_fast.experiments import datasets

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "uci"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no UCI data at {DATA}")

SHAPES = {
    "banknote": (1372, 4),
    "concrete": (1030, 8),
    "winequality-red": (1599, 11),
    "winequality-white": (4898, 11),
    "yeast": (1484, 8),
    "breast": (569, 30),
}


@needs_data
@pytest.mark.parametrize("name", datasets.UCI_DATASETS)
def test_load_uci_shapes_and_label_dropped(name):
    X, names = datasets.load_uci(name, data_dir=DATA)
    assert X.shape == SHAPES[name] and X.dtype == np.float64
    assert len(names) == X.shape[1] and np.isfinite(X).all()


@needs_data
def test_default_folder_and_environment_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    X, _ = datasets.load_uci("banknote")
    assert X.shape == (1372, 4)
    (tmp_path / "banknote.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    X, names = datasets.load_uci("banknote")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert names == ["a", "b"]
    X, names = datasets.load_uci("banknote", keep_label=True)
    np.testing.assert_array_equal(X, [[1, 2, 0], [3, 4, 1]])
    assert names == ["a", "b", "label"]


@needs_data
def test_breast_csv_equals_scikit_learn():
    X_csv, _ = datasets.load_uci("breast", data_dir=DATA)
    X_sk, names = datasets.load_breast_cancer()
    np.testing.assert_allclose(X_csv, X_sk, rtol=1e-6)
    assert names[0] == "mean radius"


def test_load_breast_cancer_needs_no_file():
    X, names = datasets.load_breast_cancer()
    assert X.shape == (569, 30) and X.dtype == np.float64 and len(names) == 30


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="banknote, concrete.*got 'iris'"):
        datasets.load_uci("iris")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "yeast.csv")):
        datasets.load_uci("yeast", data_dir=tmp_path)


def test_non_numeric_feature_is_refused(tmp_path):
    (tmp_path / "concrete.csv").write_text("a,b,label\n1,x,0\n")
    with pytest.raises(ValueError, match="non-numeric"):
        datasets.load_uci("concrete", data_dir=tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,label\n1,2,0\n3,,1\n", r"banknote\.csv line 3, column 'b' is empty"),
        ("a,b,label\n1,2,0\n\n3,4\n", r"banknote\.csv line 4 has 2 fields; the header has 3"),
        ("a,b,label\n1,2,0\n3,4,1,5\n", r"banknote\.csv line 3 has 4 fields; the header has 3"),
        ("a,b,label\n1,x,0\n", r"banknote\.csv line 2, column 'b' holds 'x', a non-numeric"),
    ],
)
def test_bad_rows_are_named_with_line_and_column(tmp_path, text, message):
    (tmp_path / "banknote.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        datasets.load_uci("banknote", data_dir=tmp_path)


@pytest.mark.parametrize("keep_label", [False, True])
@pytest.mark.parametrize("text", ["a;b;label\n1;2;0\n3;4;1\n", "label\n0\n1\n", ""])
def test_file_without_feature_columns_is_refused(tmp_path, text, keep_label):
    (tmp_path / "banknote.csv").write_text(text)
    with pytest.raises(ValueError, match=r"banknote\.csv has no feature columns"):
        datasets.load_uci("banknote", data_dir=tmp_path, keep_label=keep_label)


def test_header_only_file_and_byte_order_mark(tmp_path):
    (tmp_path / "banknote.csv").write_text("a,b,label\n\n")
    with pytest.raises(ValueError, match="holds no data rows"):
        datasets.load_uci("banknote", data_dir=tmp_path)
    (tmp_path / "banknote.csv").write_text("\ufeffa,b,label\n1,2,0\n", encoding="utf-8")
    X, names = datasets.load_uci("banknote", data_dir=tmp_path)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(X, [[1, 2]])
