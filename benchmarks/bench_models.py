"""pytest-benchmark: a not-MIWAE training step and imputation, notmiwae_fast (fused and
reference backends) against notmiwae-pytorch 0.1.3 when it is installed.

    python -m pytest benchmarks/bench_models.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import pytest
import torch

import notmiwae_fast as nf

torch.set_num_threads(2)
D = 11
IMPLS = ["fused", "reference", "notmiwae_pytorch"]


def build(impl):
    torch.manual_seed(0)
    kwargs = dict(latent_dim=D - 1, hidden_dim=128, n_samples=20, missing_process="selfmasking")
    if impl == "notmiwae_pytorch":
        npt = pytest.importorskip("notmiwae_pytorch")
        return npt.NotMIWAE(D, **kwargs)
    return nf.NotMIWAE(D, backend=impl, **kwargs)


def data(batch):
    x = torch.randn(batch, D)
    s = (x <= 0).float()
    s[:, D // 2:] = 1
    return x * s, s


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [16, 128])
def test_training_step(benchmark, impl, batch):
    model = build(impl)
    x, s = data(batch)
    if impl == "notmiwae_pytorch":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():  # notmiwae-pytorch's Trainer.train_epoch body
            opt.zero_grad()
            model(x, s)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()
    else:
        trainer = nf.Trainer(model, progress=False)

        def step():
            trainer.train_step((x, s))

    benchmark.group = f"training step, batch {batch}"
    benchmark(step)


@pytest.mark.parametrize("impl", IMPLS)
def test_imputation_k1000(benchmark, impl):
    model = build(impl)
    x, s = data(64)
    benchmark.group = "impute 64 rows, K = 1000"
    out = benchmark(lambda: model.impute(x, s, n_samples=1000))
    assert torch.isfinite(out).all()
