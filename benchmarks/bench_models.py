"""pytest-benchmark: a not-MIWAE training step (self-masking, Gaussian, hidden 128,
latent D − 1, K = 20, D = 11) and imputation at K = 1000, notmiwae_fast (fused and
reference backends) against notmiwae-pytorch 0.1.3 when it is installed. The cases are
the harness's (notmiwae_fast.bench); its report is ``notmiwae-fast bench``.

    python -m pytest benchmarks/bench_models.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from notmiwae_fast import bench as harness  # noqa: E402

torch.set_num_threads(int(os.environ.get("NOTMIWAE_BENCH_THREADS", "2")))
IMPLS = ["fused", "reference", "notmiwae_pytorch"]


def _needs(impl):
    if impl == "notmiwae_pytorch" and harness.have_notmiwae_pytorch() is None:
        pytest.skip("notmiwae-pytorch is not installed")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [16, 128])
def test_training_step(benchmark, impl, batch):
    _needs(impl)
    step = harness.train_step_call(impl, batch, "cpu")
    benchmark.group = f"training step, batch {batch}"
    benchmark(step)


@pytest.mark.parametrize("impl", IMPLS)
def test_imputation_k1000(benchmark, impl):
    _needs(impl)
    run = harness.impute_call(impl, 64, harness.TABULAR_D, 1000, "cpu")
    benchmark.group = "impute 64 rows, K = 1000"
    benchmark(run)
