"""The model-level cases of the benchmark: a training step, conditional-mean imputation
(also under torch.autocast) and impute_image, of this package (fused and reference
backends) and of notmiwae-pytorch 0.1.3, the package it is compared with, when that is
installed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .cases import HIDDEN, K_TRAIN, TABULAR_D


def have_notmiwae_pytorch() -> str | None:
    """The installed notmiwae-pytorch version, or None."""
    try:
        from importlib.metadata import version

        import notmiwae_pytorch  # noqa: F401  (it needs tensorboard and matplotlib)

        return version("notmiwae-pytorch")
    except Exception:  # noqa: BLE001  (not installed, or its imports fail)
        return None


def tabular_data(
    n: int, d: int, device: str = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal rows with the paper's MNAR pattern: in the first half of the
    columns, values above 0 are missing (zero-filled)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    s = (x <= 0).float()
    s[:, d // 2 :] = 1
    return (x * s).to(device), s.to(device)


def tabular_model(impl: str, d: int = TABULAR_D, device: str = "cpu") -> torch.nn.Module:
    """not-MIWAE (self-masking, Gaussian), hidden 128, latent d − 1, K = 20."""
    torch.manual_seed(0)
    kwargs = {
        "latent_dim": d - 1,
        "hidden_dim": HIDDEN,
        "n_samples": K_TRAIN,
        "missing_process": "selfmasking",
    }
    if impl == "notmiwae_pytorch":
        import notmiwae_pytorch as npt

        return npt.NotMIWAE(d, **kwargs).to(device)
    from ..nn.models import NotMIWAE

    return NotMIWAE(d, backend="fused" if impl == "fused" else "reference", **kwargs).to(device)


def train_step_call(impl: str, batch: int, device: str, image: bool = False) -> Callable:
    """One training step (forward, backward, Adam) as each package's Trainer makes it;
    notmiwae-pytorch's: its Trainer.train_epoch body (Adam, clipping at norm 1)."""
    if image:
        from ..images import image_model

        torch.manual_seed(0)
        model = image_model(
            "notmiwae",
            channels=3,
            patch=16,
            n_samples=K_TRAIN,
            backend="fused" if impl == "fused" else "reference",
        ).to(device)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3 * 16 * 16, generator=g)
        s = (x < 0.75).float()
        x, s = (x * s).to(device), s.to(device)
    else:
        model = tabular_model(impl, device=device)
        x, s = tabular_data(batch, TABULAR_D, device)
    if impl == "notmiwae_pytorch":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            model(x, s)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()

        return step
    from ..train.trainer import Trainer

    trainer = Trainer(model, lr=1e-3, device=device, progress=False)
    return lambda: trainer.train_step((x, s))


AUTOCAST = "fused_autocast"  # the fused backend under torch.autocast (reduced precision)


def autocast_dtype(device: str) -> torch.dtype:
    """torch.autocast's default reduced-precision dtype: bfloat16 on CPU, float16 on CUDA."""
    return torch.bfloat16 if device == "cpu" else torch.float16


def impute_call(
    impl: str, rows: int, d: int, k: int, device: str, batch_size: int = 64
) -> Callable:
    """Conditional-mean imputation of ``rows`` rows with K = k, through each package's
    ``utils.impute`` with the same batch size (``AUTOCAST``: the fused backend under
    ``torch.autocast``, its matrix products in reduced precision)."""
    model = tabular_model("fused" if impl == AUTOCAST else impl, d, device)
    x, s = tabular_data(rows, d, device)
    if impl == "notmiwae_pytorch":
        import notmiwae_pytorch.utils as their_utils

        dataset = torch.utils.data.TensorDataset(x, s)
        return lambda: their_utils.impute(model, dataset, n_samples=k, batch_size=batch_size)
    from .. import utils

    def run():
        with torch.autocast(device, dtype=autocast_dtype(device), enabled=impl == AUTOCAST):
            return utils.impute(model, x, s, n_samples=k, batch_size=batch_size, device=device)

    return run


def autocast_imputation_error(rows: int, d: int, k: int, device: str) -> dict:
    """How far imputation under autocast lands from float32's on the missing entries of
    the benchmark's data (same model, same random numbers): max and mean |difference|,
    next to the float32 imputation's RMSE against the true values for scale."""
    from .. import utils

    model = tabular_model("fused", d, device)
    truth = torch.randn(rows, d, generator=torch.Generator().manual_seed(0)).to(device)
    x, s = tabular_data(rows, d, device)  # the same draws as truth, high values missing
    results = {}
    for name, enabled in (("float32", False), ("autocast", True)):
        torch.manual_seed(0)
        with torch.autocast(device, dtype=autocast_dtype(device), enabled=enabled):
            results[name] = utils.impute(model, x, s, n_samples=k, batch_size=64, device=device)
            results[name] = torch.as_tensor(results[name], dtype=torch.float64)
    missing = s == 0
    diff = (results["autocast"] - results["float32"])[missing].abs()

    def rmse(r: torch.Tensor) -> float:
        return float(((r - truth.double())[missing] ** 2).mean().sqrt())

    return {
        "dtype": str(autocast_dtype(device)).replace("torch.", ""),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "rmse_float32": rmse(results["float32"]),
        "rmse_autocast": rmse(results["autocast"]),
    }


def image_call(impl: str, side: int, device: str, k: int = 20) -> Callable:
    """impute_image of a side × side RGB image (smooth synthetic scene, values ≥ 0.75
    clipped) with the bundled model, K = k."""
    from ..images import impute_image, load_image_model

    model = load_image_model(
        backend="fused" if impl == "fused" else "reference", map_location=device
    )
    yy, xx = np.mgrid[0:side, 0:side] / max(side, 1)
    image = np.stack(
        [0.5 + 0.45 * np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in range(3)], axis=-1
    ).astype(np.float32)
    return lambda: impute_image(model, image, clip_level=0.75, n_samples=k, progress=False)
