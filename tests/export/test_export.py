"""Export of a trained imputer: the exportable module against model.impute, TorchScript in
fresh processes (with the library, and pure PyTorch with torch alone), ONNX Runtime, and
bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import run_python

import notmiwae_fast as nf
from notmiwae_fast import export

D = 5
K = 64
MODELS = {
    "miwae-gauss": (nf.MIWAE, dict()),
    "miwae-bern": (nf.MIWAE, dict(out_dist="bern")),
    "miwae-student_t": (nf.MIWAE, dict(out_dist="student_t")),
    "miwae-ppca": (nf.MIWAE, dict(ppca=True)),
    "notmiwae-selfmasking": (nf.NotMIWAE, dict()),
    "notmiwae-known-signs": (
        nf.NotMIWAE,
        dict(missing_process="selfmasking_known_signs", signs=[1, -1, 1, 1, -1]),
    ),
    "notmiwae-linear": (nf.NotMIWAE, dict(missing_process="linear")),
    "notmiwae-nonlinear": (nf.NotMIWAE, dict(missing_process="nonlinear")),
    "notmiwae-student_t": (nf.NotMIWAE, dict(out_dist="student_t")),
    "notmiwae-bern": (nf.NotMIWAE, dict(out_dist="bern")),
}


def trained(name: str):
    cls, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = cls(D, hidden_dim=16, n_samples=8, **kwargs)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, D, generator=g)
    if model.out_dist == "bern":
        x = (x > 0).float()
    s = (torch.rand(64, D, generator=g) > 0.3).float()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x * s, s), batch_size=16)
    nf.Trainer(model, lr=1e-2, progress=False).train(loader, n_epochs=2)
    return model


def inputs(model, batch=9, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, D, generator=g)
    if model.out_dist == "bern":
        x = (x > 0).float()
    s = (torch.rand(batch, D, generator=g) > 0.4).float()
    x_nan = torch.where(s.bool(), x, torch.full_like(x, math.nan))
    eps_z = torch.randn(batch, K, model.latent_dim, generator=g)
    eps_x = torch.randn(batch, K, D, generator=g)
    return x_nan, s, eps_z, eps_x


@pytest.mark.parametrize(
    "name",
    [
        "miwae-gauss",
        "miwae-bern",
        "miwae-ppca",
        "notmiwae-selfmasking",
        "notmiwae-known-signs",
        "notmiwae-linear",
        "notmiwae-nonlinear",
    ],
)
def test_exportable_module_is_model_impute(name):
    """Same seed, same draws: the export module computes what model.impute computes."""
    model = trained(name)
    x_nan, s, _, _ = inputs(model)
    torch.manual_seed(5)
    expected = model.impute(x_nan, s, n_samples=K, chunk_size=K)
    module = export.ExportableImputer(model, n_samples=K)
    torch.manual_seed(5)
    torch.testing.assert_close(module(x_nan, s), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "pure"])
def test_torchscript_in_a_fresh_process(name, fused, tmp_path):
    model = trained(name)
    x_nan, s, eps_z, eps_x = inputs(model)
    path = tmp_path / "imputer.pt"
    export.to_torchscript(model, path, n_samples=K, fused=fused)
    eager = export.ExportableImputer(model, n_samples=K, fused=False)(x_nan, s, eps_z, eps_x)
    torch.save({"x": x_nan, "s": s, "eps_z": eps_z, "eps_x": eps_x}, tmp_path / "in.pt")
    load = f"torch.ops.load_library({nf.library_path()!r})\n" if fused else ""
    code = f"""
import json, sys, torch
{load}m = torch.jit.load({str(path)!r})
a = torch.load({str(tmp_path / "in.pt")!r})
out = m(a["x"], a["s"], a["eps_z"], a["eps_x"])
random_out = m(a["x"], a["s"])
print(json.dumps({{"out": out.tolist(), "random_finite": bool(torch.isfinite(random_out).all()),
                   "package": "notmiwae_fast" in sys.modules}}))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["package"] is False and result["random_finite"]
    torch.testing.assert_close(torch.tensor(result["out"]), eager, rtol=1e-5, atol=1e-5)
    observed = s.bool()
    assert torch.equal(torch.tensor(result["out"])[observed], x_nan[observed])


@pytest.mark.parametrize(
    "name",
    ["miwae-gauss", "miwae-student_t", "notmiwae-selfmasking", "notmiwae-linear", "notmiwae-bern"],
)
def test_onnx_runtime_matches_eager(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = trained(name)
    path = tmp_path / "imputer.onnx"
    export.to_onnx(model, path, n_samples=K, deterministic=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    module = export.ExportableImputer(model, n_samples=K, fused=False)
    for batch in (1, 257):
        x_nan, s, eps_z, eps_x = inputs(model, batch=batch)
        feeds = {"x": x_nan, "mask": s, "eps_z": eps_z, "eps_x": eps_x}
        (out,) = session.run(None, {n: feeds[n].numpy() for n in names})
        expected = module(x_nan, s, eps_z, eps_x if model.has_missing_process else None)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-4)


def test_onnx_random_mode_runs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = trained("notmiwae-selfmasking")
    export.to_onnx(model, tmp_path / "m.onnx", n_samples=K)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x_nan, s, _, _ = inputs(model, batch=33)
    (out,) = session.run(None, {"x": x_nan.numpy(), "mask": s.numpy()})
    assert out.shape == (33, D) and torch.isfinite(torch.from_numpy(out)).all()


def test_a_cpu_model_is_exported_as_it_is():
    """No copy of a model that already lives on the CPU (export reads it in place)."""
    from notmiwae_fast.export.formats import _on_cpu

    model = nf.MIWAE(D, hidden_dim=8)
    assert _on_cpu(model) is model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_a_model_on_the_gpu_exports_for_the_cpu(tmp_path):
    """A model on CUDA exports (the example inputs are CPU tensors) from a CPU copy: the
    TorchScript file loads with CPU tensors, and the model stays on the GPU."""
    model = trained("notmiwae-selfmasking").cuda()
    export.to_torchscript(model, tmp_path / "m.pt", n_samples=K)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    assert all(p.is_cuda for p in model.parameters())
    x_nan, s, _, _ = inputs(model.cpu(), batch=5)
    assert torch.isfinite(loaded(x_nan, s)).all()
    if all(_has(m) for m in ("onnx", "onnxscript")):
        export.to_onnx(model.cuda(), tmp_path / "m.onnx", n_samples=K)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------
def test_untrained_model_warns(tmp_path):
    with pytest.warns(UserWarning, match="has not been trained"):
        export.to_torchscript(nf.NotMIWAE(D, hidden_dim=8), tmp_path / "m.pt", n_samples=4)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'path': the folder .* does not exist"):
        export.to_torchscript(trained("miwae-gauss"), tmp_path / "nope" / "m.pt")


def test_unscriptable_custom_process_says_what_to_do(tmp_path):
    class Opaque(nf.BaseMissingProcess):
        def __init__(self):
            super().__init__(D)
            self.t = torch.nn.Parameter(torch.zeros(D))

        def forward(self, x):
            return torch.from_numpy((self.t - x).detach().numpy())  # not scriptable

    model = nf.NotMIWAE(D, hidden_dim=8, missing_process=Opaque())
    model.n_train_steps += 1
    with pytest.raises(
        TypeError, match="custom missing process Opaque cannot be exported.*to_onnx"
    ):
        export.to_torchscript(model, tmp_path / "m.pt")


def test_exported_model_rejects_the_wrong_width(tmp_path):
    model = trained("notmiwae-selfmasking")
    scripted = export.to_torchscript(model, tmp_path / "m.pt", n_samples=4)
    with pytest.raises(Exception, match=r"argument 'x' must have shape \[B, 5\]"):
        scripted(torch.zeros(3, 4), torch.ones(3, 4))


def test_supervised_models_are_refused(tmp_path):
    with pytest.raises(TypeError, match="export supports MIWAE and NotMIWAE"):
        export.to_torchscript(nf.SupMIWAE(D), tmp_path / "m.pt")


def test_export_works_in_original_units(tmp_path):
    """A model that records the data's standardisation exports an imputer that takes and
    returns original units."""
    model = trained("notmiwae-selfmasking")
    mean, std = (
        torch.tensor([10.0, -3.0, 0.5, 100.0, 7.0]),
        torch.tensor([2.0, 0.5, 1.0, 30.0, 4.0]),
    )
    model.set_standardization(mean, std)
    x_nan, s, eps_z, eps_x = inputs(model)
    x_orig = x_nan * std + mean
    scripted = export.to_torchscript(model, tmp_path / "m.pt", n_samples=K)
    out = scripted(x_orig, s, eps_z, eps_x)
    model.data_mean, model.data_std = None, None
    in_model_units = export.ExportableImputer(model, n_samples=K)(x_nan, s, eps_z, eps_x)
    torch.testing.assert_close(out, in_model_units * std + mean, rtol=1e-5, atol=1e-4)
    observed = s.bool()
    assert torch.equal(out[observed], x_orig[observed])


def test_the_mcar_process_exports_as_a_built_in_one(tmp_path):
    """missing_process='mcar' (what 'auto' may choose) is compiled without trying a
    user-process script first, so no TorchScript notice reaches the user."""
    import warnings

    model = nf.NotMIWAE(4, missing_process="mcar", hidden_dim=8)
    model.n_train_steps += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export.to_torchscript(model, tmp_path / "m.pt", n_samples=5, fused=False)
    x, s = torch.randn(3, 4), torch.tensor([[1.0, 0, 1, 1]] * 3)
    out = torch.jit.load(str(tmp_path / "m.pt"))(x, s)
    assert torch.equal(out[s.bool()], x[s.bool()])
