"""The benchmark harness behind ``notmiwae-fast bench``: ops, training and imputation on
CPU or CUDA, each case measured in ONE process run against its alternatives.

Variants of every case:

* ``fused``: this package (C++ / CUDA kernels);
* ``eager``: the pure-PyTorch reference twin (:mod:`notmiwae_fast.reference`, or a model
  with ``backend="reference"``);
* ``compile``: that reference under ``torch.compile`` (ops only; the model-level
  reference runs through the Trainer, which ``torch.compile`` does not wrap);
* ``notmiwae_pytorch``: notmiwae-pytorch 0.1.3 when it is installed (optional; the
  report says when it is absent).

Each timing is the median and inter-quartile range over ``repeats`` runs after warm-up
(variants interleaved round by round, so drift on a shared machine hits all alike);
throughput is given per case (elements/s, rows/s, steps/s, megapixels/s). Peak memory:
on CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before the call;
on the CPU the growth of the peak resident set of a fresh child process that runs the
case once (glibc told to map every buffer of 64 KiB or more separately, so the resident
set follows the live tensors: resolution about 1 MB).

GPU bandwidth: for each fused op's forward, the bytes that must move (every input read
once, every output written once) divided by the time, as a fraction of the device's
measured device-to-device copy bandwidth (bytes read + written per second).

Outputs in ``out_dir``: ``bench.json`` (machine, CPU model, cores and threads, torch and
package versions, git commit, every figure), ``bench.md`` (tables, the acceptance ratios
of the kernel and model-layer issues) and PNG plots of the scaling sweeps.

    notmiwae-fast bench --suite all --device cpu --out bench-results [--quick]

The harness by role: :mod:`.cases` (the ops, their shapes and variants),
:mod:`.model_cases` (training steps and imputation, notmiwae-pytorch's included),
:mod:`.timing`, :mod:`.memory` (and its child process, ``python -m notmiwae_fast.bench
--child SPEC``), :mod:`.suites` (and :func:`run`), :mod:`.machine` and :mod:`.report`
(acceptance ratios, bench.md, plots).
"""

from __future__ import annotations

from .cases import (
    ALL_OPS,
    HIDDEN,
    IW_OPS,
    K_TRAIN,
    LIKELIHOOD_OPS,
    MLP_OPS,
    OP_SHAPES,
    TABULAR_D,
    op_call,
    op_forward_bytes,
    op_function,
    op_inputs,
)
from .machine import cpu_model, git_commit, machine_info
from .memory import build_case, child_peak_mb, cuda_peak_mb, peak_mb, reset_peak_rss, rss_mb
from .model_cases import (
    AUTOCAST,
    autocast_dtype,
    autocast_imputation_error,
    have_notmiwae_pytorch,
    image_call,
    impute_call,
    tabular_data,
    tabular_model,
    train_step_call,
)
from .report import acceptance, markdown, plots
from .suites import SUITES, run, suite_impute, suite_ops, suite_sweep, suite_train
from .timing import copy_bandwidth_gbs, summary, time_interleaved

__all__ = [
    "ALL_OPS",
    "AUTOCAST",
    "HIDDEN",
    "IW_OPS",
    "K_TRAIN",
    "LIKELIHOOD_OPS",
    "MLP_OPS",
    "OP_SHAPES",
    "SUITES",
    "TABULAR_D",
    "acceptance",
    "autocast_dtype",
    "autocast_imputation_error",
    "build_case",
    "child_peak_mb",
    "copy_bandwidth_gbs",
    "cpu_model",
    "cuda_peak_mb",
    "git_commit",
    "have_notmiwae_pytorch",
    "image_call",
    "impute_call",
    "machine_info",
    "markdown",
    "op_call",
    "op_forward_bytes",
    "op_function",
    "op_inputs",
    "peak_mb",
    "plots",
    "reset_peak_rss",
    "rss_mb",
    "run",
    "suite_impute",
    "suite_ops",
    "suite_sweep",
    "suite_train",
    "summary",
    "tabular_data",
    "tabular_model",
    "time_interleaved",
    "train_step_call",
]
