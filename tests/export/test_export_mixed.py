"""Export of the mixed-table model: ONNX and traced TorchScript impute in the table's
units, and the imputer's codec turns the result back into the DataFrame's dtypes."""

import numpy as np
import pytest
import torch
from helpers import MIXED_FAST as FAST
from helpers import mixed_frame, with_holes

from notmiwae_fast import NotMIWAEImputer, export
from notmiwae_fast.export.mixed import MixedExportableImputer


@pytest.fixture(scope="module")
def fitted():
    df = with_holes(mixed_frame(150))
    return NotMIWAEImputer(**{**FAST, "max_iter": 100}).fit(df), df


def encoded(imputer, df):
    arr = imputer.codec_.encode(df)
    return np.nan_to_num(arr).astype(np.float32), (~np.isnan(arr)).astype(np.float32)


def test_exported_module_keeps_observed_values_and_the_units(fitted):
    imputer, df = fitted
    x, mask = encoded(imputer, df)
    torch.manual_seed(0)
    out = MixedExportableImputer(imputer.model_, n_samples=100)(
        torch.from_numpy(x), torch.from_numpy(mask)
    ).numpy()
    observed = mask.astype(bool)
    np.testing.assert_array_equal(out[observed], x[observed])
    back = imputer.codec_.decode(out.astype(np.float64), df)
    assert back.dtypes.to_dict() == df.dtypes.to_dict() and not back.isna().any().any()
    # the same rules as the imputer: categorical imputations mostly the same categories
    expected = imputer.transform(df)
    lost = df["level"].isna()
    assert (back["level"][lost] == expected["level"][lost]).mean() > 0.8


def test_onnx_export_round_trips_through_the_codec(fitted, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    imputer, df = fitted
    export.to_onnx(imputer.model_, tmp_path / "m.onnx", n_samples=50)
    x, mask = encoded(imputer, df)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    out = session.run(None, {"x": x[:17], "mask": mask[:17]})[0]  # any batch size
    assert out.shape == (17, x.shape[1])
    back = imputer.codec_.decode(out.astype(np.float64), df.iloc[:17])
    assert back.dtypes.to_dict() == df.dtypes.to_dict() and not back.isna().any().any()
    assert set(back["colour"]) <= {"red", "blue"}
    with pytest.raises(NotImplementedError, match="deterministic"):
        export.to_onnx(imputer.model_, tmp_path / "d.onnx", deterministic=True)


def test_torchscript_export_is_traced_and_takes_any_batch(fitted, tmp_path):
    imputer, df = fitted
    export.to_torchscript(imputer.model_, tmp_path / "m.pt", n_samples=30)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x, mask = encoded(imputer, df)
    for rows in (1, 9):
        out = loaded(torch.from_numpy(x[:rows]), torch.from_numpy(mask[:rows]))
        assert out.shape == (rows, x.shape[1]) and torch.isfinite(out).all()
    complete = torch.from_numpy(x[:4]), torch.ones(4, x.shape[1])
    assert torch.equal(loaded(*complete), complete[0])
