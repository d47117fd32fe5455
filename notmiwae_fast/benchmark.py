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
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

SUITES = ("ops", "train", "impute", "sweep")
IW_OPS = ("iw_logmeanexp", "iw_weights", "iw_impute")
LIKELIHOOD_OPS = ("masked_normal_logprob", "masked_bernoulli_logprob",
                  "masked_studentt_logprob", "selfmask_logprob", "notmiwae_normal_terms")
# mlp_tanh at [B, K, D]: the tabular decoder, [B·K, D − 1] -> 128 -> 128 -> [B·K, 2D].
MLP_OPS = ("mlp_tanh",)
ALL_OPS = IW_OPS + LIKELIHOOD_OPS + MLP_OPS
OP_SHAPES = {"tabular-B16": (16, 20, 11), "tabular-B128": (128, 20, 11),
             "image-B16": (16, 20, 12288)}
TABULAR_D, HIDDEN, K_TRAIN = 11, 128, 20


# ------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def summary(values: list[float]) -> dict:
    """Median, quartiles and count of a list of measurements."""
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0], "n": 1}
    q = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "n": len(values)}


def time_interleaved(calls: dict[str, Callable], repeats: int, device: str,
                     min_time: float = 2e-3) -> dict[str, dict]:
    """Seconds per call of each callable: warm-up, then ``repeats`` rounds that run every
    variant in turn; a call faster than ``min_time`` is repeated within a round and its
    time averaged (timer resolution)."""
    inner = {}
    for name, fn in calls.items():
        fn()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        once = time.perf_counter() - start
        inner[name] = max(1, min(1000, int(min_time / max(once, 1e-9))))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / inner[name])
    return {name: summary(v) for name, v in times.items()}


def cuda_peak_mb(fn: Callable) -> float:
    """Peak CUDA memory allocated by one call of fn above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def child_peak_mb(spec: dict, threads: int) -> Optional[float]:
    """Peak resident-set growth (MB) of a fresh process running the case ``spec`` once
    (see :func:`_child_main`); None when the child failed (reason on stderr)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "notmiwae_fast.benchmark", "--child",
                           json.dumps(spec)], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        sys.stderr.write(f"memory child {spec} failed:\n{proc.stderr[-2000:]}\n")
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def peak_mb(spec: dict, device: str, threads: int) -> Optional[float]:
    """Peak extra memory of running ``spec`` once: in-process on CUDA, child on CPU."""
    if device == "cuda":
        fn = build_case(spec, device)
        fn()  # lazy initialisation (cuBLAS workspaces, compiled kernels) is not the case's
        return cuda_peak_mb(fn)
    return child_peak_mb(spec, threads)


# ------------------------------------------------------------------------------------
# Cases: a spec (a small dict) -> a callable that runs the case once
# ------------------------------------------------------------------------------------
def op_inputs(op: str, B: int, K: int, D: int, device: str, seed: int = 0):
    """Random float32 inputs of ``op`` at [B, K, D] (30 % of the entries missing, NaN
    there) and the indices of the arguments that get gradients."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    if op in MLP_OPS:
        sizes = [D - 1, HIDDEN, HIDDEN, 2 * D]
        weights = [randn(b, a) / a ** 0.5 for a, b in zip(sizes[:-1], sizes[1:])]
        biases = [randn(b) for b in sizes[1:]]
        args = [randn(B * K, D - 1)] + weights + biases
        return args, list(range(len(args)))
    if op in IW_OPS:
        log_w = randn(B, K)
        return ([log_w], [0]) if op != "iw_impute" else ([log_w, randn(B, K, D)], [0, 1])
    mask = (torch.rand(B, D, generator=g) > 0.3).to(device)
    x = torch.where(mask, randn(B, D), torch.full((), float("nan"), device=device))
    loc, scale = randn(B, K, D), (0.5 + torch.rand(B, K, D, generator=g)).to(device)
    W, b = randn(D), randn(D)
    if op == "masked_normal_logprob":
        return [x, mask, loc, scale], [2, 3]
    if op == "masked_bernoulli_logprob":
        return [torch.where(mask, (randn(B, D) > 0).float(), x), mask, 3 * randn(B, K, D)], [2]
    if op == "masked_studentt_logprob":
        return [x, mask, loc, scale, (2.0 + 3 * torch.rand(D, generator=g)).to(device)], [2, 3, 4]
    if op == "selfmask_logprob":
        return [randn(B, K, D), mask, W, b], [0, 2, 3]
    if op == "notmiwae_normal_terms":
        return [x, mask, loc, scale, randn(B, K, D), W, b], [2, 3, 5, 6]
    raise ValueError(f"unknown op {op!r}")


def op_function(op: str, variant: str) -> Callable:
    from . import ops
    from .ops import reference
    if variant not in ("fused", "eager", "compile"):
        raise ValueError(f"unknown variant {variant!r}")
    fn = getattr(ops if variant == "fused" else reference, op)
    if op in MLP_OPS:  # flat arguments (x, W_1..W_n, b_1..b_n), as op_inputs makes them
        layered = fn

        def fn(x, *params):
            n = len(params) // 2
            return layered(x, list(params[:n]), list(params[n:]))
    return torch.compile(fn, dynamic=False) if variant == "compile" else fn


def op_call(op: str, variant: str, B: int, K: int, D: int, device: str,
            backward: bool = True) -> Callable:
    """One forward (+ backward of the sum of the outputs) of ``op``."""
    fn = op_function(op, variant)
    args, grad_idx = op_inputs(op, B, K, D, device)
    params = [args[i].requires_grad_(backward) for i in grad_idx]

    def run():
        outs = fn(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if backward:
            torch.autograd.grad(sum(o.sum() for o in outs), params)
        return outs

    return run


def tabular_data(n: int, d: int, device: str = "cpu", seed: int = 0):
    """Standard-normal rows with the paper's MNAR pattern: in the first half of the
    columns, values above 0 are missing (zero-filled)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    s = (x <= 0).float()
    s[:, d // 2:] = 1
    return (x * s).to(device), s.to(device)


def tabular_model(impl: str, d: int = TABULAR_D, device: str = "cpu"):
    """not-MIWAE (self-masking, Gaussian), hidden 128, latent d − 1, K = 20."""
    torch.manual_seed(0)
    kwargs = dict(latent_dim=d - 1, hidden_dim=HIDDEN, n_samples=K_TRAIN,
                  missing_process="selfmasking")
    if impl == "notmiwae_pytorch":
        import notmiwae_pytorch as npt
        return npt.NotMIWAE(d, **kwargs).to(device)
    from .nn.models import NotMIWAE
    return NotMIWAE(d, backend="fused" if impl == "fused" else "reference", **kwargs).to(device)


def train_step_call(impl: str, batch: int, device: str, image: bool = False) -> Callable:
    """One training step (forward, backward, Adam) as each package's Trainer makes it;
    notmiwae-pytorch's: its Trainer.train_epoch body (Adam, clipping at norm 1)."""
    if image:
        from .images import image_model
        torch.manual_seed(0)
        model = image_model("notmiwae", channels=3, patch=16, n_samples=K_TRAIN,
                            backend="fused" if impl == "fused" else "reference").to(device)
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
    from .train.trainer import Trainer
    trainer = Trainer(model, lr=1e-3, device=device, progress=False)
    return lambda: trainer.train_step((x, s))


AUTOCAST = "fused_autocast"  # the fused backend under torch.autocast (reduced precision)


def autocast_dtype(device: str) -> torch.dtype:
    """torch.autocast's default reduced-precision dtype: bfloat16 on CPU, float16 on CUDA."""
    return torch.bfloat16 if device == "cpu" else torch.float16


def impute_call(impl: str, rows: int, d: int, k: int, device: str,
                batch_size: int = 64) -> Callable:
    """Conditional-mean imputation of ``rows`` rows with K = k, through each package's
    ``utils.impute`` with the same batch size (``AUTOCAST``: the fused backend under
    ``torch.autocast``, its matrix products in reduced precision)."""
    model = tabular_model("fused" if impl == AUTOCAST else impl, d, device)
    x, s = tabular_data(rows, d, device)
    if impl == "notmiwae_pytorch":
        import notmiwae_pytorch.utils as their_utils
        dataset = torch.utils.data.TensorDataset(x, s)
        return lambda: their_utils.impute(model, dataset, n_samples=k, batch_size=batch_size)
    from . import utils

    def run():
        with torch.autocast(device, dtype=autocast_dtype(device), enabled=impl == AUTOCAST):
            return utils.impute(model, x, s, n_samples=k, batch_size=batch_size, device=device)
    return run


def autocast_imputation_error(rows: int, d: int, k: int, device: str) -> dict:
    """How far imputation under autocast lands from float32's on the missing entries of
    the benchmark's data (same model, same random numbers): max and mean |difference|,
    next to the float32 imputation's RMSE against the true values for scale."""
    from . import utils
    model = tabular_model("fused", d, device)
    truth = torch.randn(rows, d, generator=torch.Generator().manual_seed(0)).to(device)
    x, s = tabular_data(rows, d, device)  # the same draws as truth, high values missing
    results = {}
    for name, enabled in (("float32", False), ("autocast", True)):
        torch.manual_seed(0)
        with torch.autocast(device, dtype=autocast_dtype(device), enabled=enabled):
            results[name] = utils.impute(model, x, s, n_samples=k, batch_size=64,
                                         device=device)
            results[name] = torch.as_tensor(results[name], dtype=torch.float64)
    missing = s == 0
    diff = (results["autocast"] - results["float32"])[missing].abs()
    rmse = lambda r: float(((r - truth.double())[missing] ** 2).mean().sqrt())  # noqa: E731
    return {"dtype": str(autocast_dtype(device)).replace("torch.", ""),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "rmse_float32": rmse(results["float32"]), "rmse_autocast": rmse(results["autocast"])}


def image_call(impl: str, side: int, device: str, k: int = 20) -> Callable:
    """impute_image of a side × side RGB image (smooth synthetic scene, values ≥ 0.75
    clipped) with the bundled model, K = k."""
    from .images import impute_image, load_image_model
    model = load_image_model(backend="fused" if impl == "fused" else "reference",
                             map_location=device)
    yy, xx = np.mgrid[0:side, 0:side] / max(side, 1)
    image = np.stack([0.5 + 0.45 * np.sin(6 * xx + c) * np.cos(5 * yy - c)
                      for c in range(3)], axis=-1).astype(np.float32)
    return lambda: impute_image(model, image, clip_level=0.75, n_samples=k, progress=False)


def build_case(spec: dict, device: str) -> Callable:
    kind = spec["kind"]
    if kind == "op":
        return op_call(spec["op"], spec["variant"], *spec["shape"], device,
                       spec.get("backward", True))
    if kind == "train":
        return train_step_call(spec["impl"], spec["batch"], device, spec.get("image", False))
    if kind == "impute":
        return impute_call(spec["impl"], spec["rows"], spec["d"], spec["k"], device)
    if kind == "image":
        return image_call(spec["impl"], spec["side"], device, spec.get("k", 20))
    raise ValueError(f"unknown case kind {kind!r}")


def rss_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process in MB, from /proc/self/status;
    the peak from getrusage where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Resets the peak resident set to the current one (Linux: 5 > /proc/self/clear_refs),
    so that a larger transient peak earlier in the process (imports, set-up) cannot hide
    the measured call's memory; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _child_main(spec_json: str) -> None:
    """Runs one case once in this (fresh) process; prints its peak RSS growth in MB."""
    spec = json.loads(spec_json)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    fn = build_case(spec, "cpu")
    if spec["kind"] == "op":  # first call outside: dispatcher / autograd set-up
        op_call(spec["op"], spec["variant"], 2, 2, 3, "cpu")()
    reset_peak_rss()
    before = rss_mb("VmRSS")
    with torch.no_grad() if spec["kind"] in ("impute", "image") else contextlib.nullcontext():
        fn()
    print(max(0.0, rss_mb("VmHWM") - before))


# ------------------------------------------------------------------------------------
# Suites
# ------------------------------------------------------------------------------------
def have_notmiwae_pytorch() -> Optional[str]:
    """The installed notmiwae-pytorch version, or None."""
    try:
        from importlib.metadata import version
        import notmiwae_pytorch  # noqa: F401  (it needs tensorboard and matplotlib)
        return version("notmiwae-pytorch")
    except Exception:  # not installed, or its imports fail
        return None


def copy_bandwidth_gbs(device: str) -> Optional[float]:
    """Device-to-device copy bandwidth (bytes read + written per second), GB/s."""
    if device != "cuda":
        return None
    a = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    b = torch.empty_like(a)
    t = time_interleaved({"copy": lambda: b.copy_(a)}, 10, device)["copy"]["median"]
    return 2 * a.numel() * 4 / t / 1e9


def op_forward_bytes(op: str, B: int, K: int, D: int, device: str) -> int:
    """Bytes a forward of ``op`` must move: every input read once, every output written
    once."""
    args, _ = op_inputs(op, B, K, D, device)
    with torch.no_grad():
        outs = op_function(op, "fused")(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return sum(t.numel() * t.element_size() for t in list(args) + list(outs))


def suite_ops(device: str, repeats: int, threads: int, quick: bool, log) -> dict:
    shapes = {"tabular-B128": OP_SHAPES["tabular-B128"]}
    if not quick:
        shapes = dict(OP_SHAPES)
    variants = ["fused", "eager"] + ([] if quick else ["compile"])
    rows = []
    for op in ALL_OPS:
        for shape_name, (B, K, D) in shapes.items():
            if op in IW_OPS and shape_name == "image-B16" and op != "iw_impute":
                continue
            if op in MLP_OPS and shape_name == "image-B16":
                continue
            calls = {}
            for v in variants:
                if v == "compile" and device == "cuda" and shape_name != "image-B16":
                    continue  # each torch.compile costs seconds: on the GPU, the large shape only
                try:
                    calls[v] = op_call(op, v, B, K, D, device)
                    calls[v]()
                except Exception as err:  # torch.compile may be unavailable here
                    log(f"  {op} {shape_name} {v}: unavailable ({type(err).__name__}: {err})")
                    calls.pop(v, None)
            t = time_interleaved(calls, repeats, device)
            row = {"op": op, "shape": shape_name, "B": B, "K": K, "D": D, "time_s": t,
                   "elements_per_s": {v: B * K * D / t[v]["median"] for v in t}}
            if not quick or device == "cuda":
                row["peak_mb"] = {v: peak_mb({"kind": "op", "op": op, "shape": [B, K, D],
                                              "variant": v}, device, threads)
                                  for v in ("fused", "eager")}
            if device == "cuda":
                fwd = time_interleaved({"fused": op_call(op, "fused", B, K, D, device,
                                                         backward=False)}, repeats, device)
                row["forward_s"] = fwd["fused"]
                row["forward_bytes"] = op_forward_bytes(op, B, K, D, device)
            rows.append(row)
            log(f"  {op:<26} {shape_name:<13} " + "  ".join(
                f"{v} {1e3 * t[v]['median']:.3f} ms" for v in t))
    return {"cases": rows}


def suite_train(device: str, repeats: int, quick: bool, log) -> dict:
    impls = ["fused", "reference"] + (["notmiwae_pytorch"] if have_notmiwae_pytorch() else [])
    cases = []
    for name, batch, image in ([("tabular-B16", 16, False), ("tabular-B128", 128, False)]
                               + [("image-16x16x3-B16", 16, True)]):
        names = [i for i in impls if not (image and i == "notmiwae_pytorch")]
        calls = {i: train_step_call(i, batch, device, image) for i in names}
        for fn in calls.values():
            for _ in range(3 if quick else 10):
                fn()
        # Rounds of >= 0.1 s of consecutive steps: training runs steps back to back, so
        # a round measures that steady state, not one step on caches the other
        # implementations just evicted.
        t = time_interleaved(calls, repeats, device, min_time=0.1)
        cases.append({"case": name, "batch": batch, "time_s": t,
                      "steps_per_s": {i: 1 / t[i]["median"] for i in t},
                      "rows_per_s": {i: batch / t[i]["median"] for i in t}})
        log(f"  train {name:<18} " + "  ".join(f"{i} {1e3 * t[i]['median']:.2f} ms" for i in t))
    return {"cases": cases}


def suite_impute(device: str, repeats: int, threads: int, quick: bool, log) -> dict:
    impls = ["fused", AUTOCAST, "reference"] + (["notmiwae_pytorch"]
                                                 if have_notmiwae_pytorch() else [])
    rows = 200 if quick else 1000
    cases = []
    for k in ([1000] if quick else [1000, 10000]):
        n = rows if k == 1000 or device == "cuda" else rows // 10  # rows/s: fewer suffice
        calls = {i: impute_call(i, n, TABULAR_D, k, device) for i in impls}
        t = time_interleaved(calls, max(3, repeats // 4), device)
        cases.append({"case": f"tabular-K{k}", "rows": n, "D": TABULAR_D, "K": k,
                      "time_s": t, "rows_per_s": {i: n / t[i]["median"] for i in t}})
        log(f"  impute K={k:<6} " + "  ".join(f"{i} {n / t[i]['median']:.0f} rows/s" for i in t))
    autocast_error = autocast_imputation_error(rows, TABULAR_D, 1000, device)
    log("  impute under autocast: |difference| from float32 max "
        f"{autocast_error['max_abs_diff']:.4f}, mean {autocast_error['mean_abs_diff']:.5f}")
    mem_d, mem_rows = (1024, 16) if quick else (12288, 16)
    memory = {i: peak_mb({"kind": "impute", "impl": i, "rows": mem_rows, "d": mem_d, "k": 1000},
                         device, threads) for i in impls if i != AUTOCAST}
    log(f"  impute memory D={mem_d} K=1000: " + "  ".join(f"{i} {m} MB" for i, m in memory.items()))
    side = 128 if quick else 512
    calls = {i: image_call(i, side, device) for i in ("fused", "reference")}
    t = time_interleaved(calls, max(3, repeats // 4), device)
    image = {"side": side, "time_s": t,
             "megapixels_per_s": {i: side * side / 1e6 / t[i]["median"] for i in t}}
    log(f"  impute_image {side}²: " + "  ".join(
        f"{i} {image['megapixels_per_s'][i]:.3f} MP/s" for i in t))
    return {"cases": cases, "memory": {"rows": mem_rows, "D": mem_d, "K": 1000, "peak_mb": memory},
            "image": image, "autocast_error": autocast_error}


def suite_sweep(device: str, repeats: int, threads: int, quick: bool, log) -> dict:
    """Scaling of the fused notmiwae_normal_terms (forward + backward) and iw_impute over
    B, K and D, one at a time from a base shape; imputation memory against K."""
    base = {"B": 64, "K": 32, "D": 64}
    grid = [16, 64, 256] if quick else [16, 64, 256, 1024, 4096]
    points = []
    for op in ("notmiwae_normal_terms", "iw_impute"):
        for axis in ("B", "K", "D"):
            for value in grid:
                shape = dict(base, **{axis: value})
                t = time_interleaved({"fused": op_call(op, "fused", shape["B"], shape["K"],
                                                       shape["D"], device)},
                                     max(3, repeats // 2), device)["fused"]
                points.append({"op": op, "axis": axis, **shape,
                               "BKD": shape["B"] * shape["K"] * shape["D"], "time_s": t})
    ks = [100, 1000, 10000] if quick else [100, 1000, 10000, 100000]
    memory = []
    for k in ks:
        memory.append({"K": k, "rows": 64, "D": 64, "peak_mb": {
            i: peak_mb({"kind": "impute", "impl": i, "rows": 64, "d": 64, "k": k}, device, threads)
            for i in (("fused",) if k > 10000 else ("fused", "reference"))}})
        log(f"  sweep memory K={k}: {memory[-1]['peak_mb']}")
    # The kernel issue's memory target: iw_impute's own allocations beyond its inputs
    # (the [B, K, D] values are an input) at B = 64, K = 100,000, D = 64.
    k_op = 10000 if quick else 100000
    op_memory = {"B": 64, "K": k_op, "D": 64, "peak_mb": {
        v: peak_mb({"kind": "op", "op": "iw_impute", "shape": [64, k_op, 64], "variant": v,
                    "backward": False}, device, threads) for v in ("fused", "eager")}}
    log(f"  iw_impute forward B=64 K={k_op} D=64 peak extra memory: {op_memory['peak_mb']}")
    return {"base": base, "points": points, "impute_memory": memory,
            "iw_impute_memory": op_memory}


# ------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------
def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=False, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int) -> dict:
    from . import __version__, backend
    info = {"machine": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "notmiwae_fast": __version__,
            "backend": str(backend()), "git_commit": git_commit(), "device": device,
            "notmiwae_pytorch": have_notmiwae_pytorch(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                    cuda=torch.version.cuda, copy_bandwidth_gbs=copy_bandwidth_gbs(device))
    return info


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def acceptance(results: dict) -> list[dict]:
    """The acceptance ratios of the kernel and model-layer issues found in ``results``."""
    checks = []

    def add(name, value, target, holds):
        checks.append({"check": name, "value": value, "target": target,
                       "met": None if value is None else bool(holds(value))})

    for row in results.get("ops", {}).get("cases", []):
        if row["op"] != "notmiwae_normal_terms":
            continue
        t = row["time_s"]
        speed = _ratio(t["eager"]["median"], t["fused"]["median"])
        if row["shape"] == "image-B16":
            add("notmiwae_normal_terms fwd+bwd B=16 K=20 D=12288: speed-up vs eager", speed,
                "≥ 3×", lambda v: v >= 3)
            mem = row.get("peak_mb", {})
            add("  … its peak extra memory as a fraction of eager's",
                _ratio(mem.get("fused"), mem.get("eager")), "≤ 1/3", lambda v: v <= 1 / 3)
            if "compile" in t:
                add("  … speed-up vs torch.compile of the reference (aim: not slower)",
                    _ratio(t["compile"]["median"], t["fused"]["median"]), "≥ 1× (aim)",
                    lambda v: v >= 1)
        if row["shape"] == "tabular-B128":
            add("notmiwae_normal_terms fwd+bwd B=128 K=20 D=11: speed-up vs eager", speed,
                "≥ 2×", lambda v: v >= 2)
    for case in results.get("train", {}).get("cases", []):
        t = case["time_s"]
        if "notmiwae_pytorch" in t and case["case"].startswith("tabular"):
            target = 3 if case["batch"] == 16 else 2
            add(f"training step batch {case['batch']}: speed-up vs notmiwae-pytorch",
                _ratio(t["notmiwae_pytorch"]["median"], t["fused"]["median"]),
                f"≥ {target}×", lambda v, target=target: v >= target)
    imp = results.get("impute", {})
    for case in imp.get("cases", []):
        r = case["rows_per_s"]
        if case["K"] == 1000 and "notmiwae_pytorch" in r:
            add(f"imputation rows/s, {case['rows']} rows, D=11, K=1000: vs notmiwae-pytorch",
                _ratio(r["fused"], r["notmiwae_pytorch"]), "≥ 5×", lambda v: v >= 5)
            if AUTOCAST in r:
                add("  … the same under torch.autocast (reduced-precision matrix products; "
                    "not the float32 comparison)", _ratio(r[AUTOCAST], r["notmiwae_pytorch"]),
                    "≥ 5×", lambda v: v >= 5)
    mem = imp.get("memory", {})
    if "notmiwae_pytorch" in mem.get("peak_mb", {}):
        p = mem["peak_mb"]
        add(f"imputation peak memory D={mem['D']} K=1000: notmiwae-pytorch / fused",
            _ratio(p["notmiwae_pytorch"], max(p["fused"] or 0.0, 1.0)), "≥ 5×",
            lambda v: v >= 5)
    op_mem = results.get("sweep", {}).get("iw_impute_memory")
    if op_mem and op_mem["K"] == 100000:
        add("iw_impute B=64 K=100,000 D=64: peak extra memory beyond its inputs (MB)",
            op_mem["peak_mb"]["fused"], "< 100 MB", lambda v: v < 100)
    return checks


def _mb_list(peaks: dict) -> str:
    """'fused 12 MB, eager 30 MB' ('–' where a measurement failed)."""
    return ", ".join(f"{name} {'–' if mb is None else f'{mb:.0f} MB'}"
                     for name, mb in peaks.items())


def _fmt_t(s: dict, scale: float = 1e3) -> str:
    return f"{s['median'] * scale:.3g} [{s['q1'] * scale:.3g}–{s['q3'] * scale:.3g}]"


def markdown(report: dict) -> str:
    m = report["machine"]
    where = (f"{m['gpu']} (CUDA {m['cuda']}, copy bandwidth {m['copy_bandwidth_gbs']:.0f} GB/s)"
             if m["device"] == "cuda" else f"{m['cpu']}, {m['cores']} cores")
    lines = [f"# notmiwae-fast bench ({m['device']}{', quick' if report['quick'] else ''})", "",
             f"{where}; {m['threads']} threads; torch {m['torch']}; notmiwae_fast "
             f"{m['notmiwae_fast']} (commit {(m['git_commit'] or 'unknown')[:10]}); "
             f"notmiwae-pytorch: {m['notmiwae_pytorch'] or 'not installed (its columns absent)'}. "
             "Times: median [inter-quartile range] in ms; ratios from medians measured in "
             "the same run.", ""]
    checks = report.get("acceptance", [])
    if checks:
        lines += ["## Acceptance ratios", "", "| check | measured | target | met |",
                  "|---|---|---|---|"]
        for c in checks:
            # three decimals below 10: a ratio of 1.997 must not read as 2
            value = ("–" if c["value"] is None else
                     f"{c['value']:.3f}" if abs(c["value"]) < 10 else f"{c['value']:.3g}")
            met = {True: "✓", False: "✗", None: "–"}[c["met"]]
            lines.append(f"| {c['check']} | {value} | {c['target']} | {met} |")
        lines.append("")
    res = report["results"]
    if "ops" in res:
        cuda = m["device"] == "cuda"
        lines += ["## Ops, forward + backward (float32)", "",
                  "| op | shape | fused ms | eager ms | compile ms | vs eager | vs compile "
                  "| peak MB fused / eager |" + (" fwd GB/s | of copy bw |" if cuda else ""),
                  "|---|---|---|---|---|---|---|---|" + ("---|---|" if cuda else "")]
        for r in res["ops"]["cases"]:
            t = r["time_s"]
            comp = _fmt_t(t["compile"]) if "compile" in t else "–"
            vs_c = (f"{t['compile']['median'] / t['fused']['median']:.2f}×"
                    if "compile" in t else "–")
            mem = r.get("peak_mb")
            mem_s = (f"{mem['fused']:.0f} / {mem['eager']:.0f}"
                     if mem and None not in mem.values() else "–")
            row = (f"| {r['op']} | {r['shape']} | {_fmt_t(t['fused'])} | {_fmt_t(t['eager'])} | "
                   f"{comp} | {t['eager']['median'] / t['fused']['median']:.2f}× | {vs_c} | "
                   f"{mem_s} |")
            if cuda:
                gbs = r["forward_bytes"] / r["forward_s"]["median"] / 1e9
                row += f" {gbs:.0f} | {gbs / m['copy_bandwidth_gbs']:.0%} |"
            lines.append(row)
        lines.append("")
    if "train" in res:
        lines += ["## Training step (forward, backward, Adam): not-MIWAE self-masking, "
                  "hidden 128, K = 20", "", "| case | implementation | ms/step | steps/s | "
                  "rows/s | fused speed-up |", "|---|---|---|---|---|---|"]
        for c in res["train"]["cases"]:
            f = c["time_s"]["fused"]["median"]
            for i, t in c["time_s"].items():
                lines.append(f"| {c['case']} | {i} | {_fmt_t(t)} | {c['steps_per_s'][i]:.1f} | "
                             f"{c['rows_per_s'][i]:.0f} | {t['median'] / f:.2f}× |")
        lines.append("")
    if "impute" in res:
        imp = res["impute"]
        lines += ["## Imputation", "", "| case | implementation | rows/s | fused speed-up |",
                  "|---|---|---|---|"]
        for c in imp["cases"]:
            f = c["rows_per_s"]["fused"]
            for i, r in c["rows_per_s"].items():
                lines.append(f"| {c['rows']} rows, D = {c['D']}, K = {c['K']} | {i} | {r:.0f} | "
                             f"{f / r:.2f}× |")
        err = imp.get("autocast_error")
        if err:
            lines += ["", f"{AUTOCAST}: `torch.autocast` with {err['dtype']}; its imputations "
                      f"differ from float32's by at most {err['max_abs_diff']:.4f} (mean "
                      f"{err['mean_abs_diff']:.5f}) on the missing entries (standard-normal "
                      f"data); RMSE against the true values {err['rmse_autocast']:.4f} vs "
                      f"{err['rmse_float32']:.4f} in float32."]
        mem = imp["memory"]
        lines += ["", f"Peak extra memory imputing {mem['rows']} rows of D = {mem['D']} with "
                  f"K = {mem['K']}: " + _mb_list(mem["peak_mb"]) + ".",
                  "", f"impute_image, {imp['image']['side']}² RGB, K = 20: " + ", ".join(
                      f"{i} {v:.3f} megapixels/s"
                      for i, v in imp["image"]["megapixels_per_s"].items()) + ".", ""]
    if "sweep" in res:
        sw = res["sweep"]
        lines += ["## Scaling sweeps (fused)", "",
                  f"Base shape B, K, D = {sw['base']['B']}, {sw['base']['K']}, "
                  f"{sw['base']['D']}; one axis varied at a time (plot: scaling.png).", "",
                  "| op | axis | B·K·D | ms |", "|---|---|---|---|"]
        for p in sw["points"]:
            lines.append(f"| {p['op']} | {p['axis']} = {p[p['axis']]} | {p['BKD']} | "
                         f"{_fmt_t(p['time_s'])} |")
        om = sw["iw_impute_memory"]
        lines += ["", f"iw_impute forward, B = {om['B']}, K = {om['K']}, D = {om['D']}: peak "
                  "extra memory beyond its inputs " + _mb_list(om["peak_mb"]) + "."]
        lines += ["", "model.impute peak extra memory against K (64 rows, D = 64; plot: "
                  "memory_vs_k.png): " + "; ".join(
                      f"K = {x['K']}: " + _mb_list(x["peak_mb"]) for x in sw["impute_memory"])
                  + ".",
                  ""]
    return "\n".join(lines)


def plots(report: dict, out_dir: Path) -> list[str]:
    """Log-log plots of the sweeps; none when matplotlib is missing."""
    sw = report["results"].get("sweep")
    if sw is None:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(str(out_dir / name))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, op in zip(axes, ("notmiwae_normal_terms", "iw_impute")):
        for axis, marker in zip("BKD", "os^"):
            pts = [p for p in sw["points"] if p["op"] == op and p["axis"] == axis]
            ax.loglog([p["BKD"] for p in pts], [1e3 * p["time_s"]["median"] for p in pts],
                      marker=marker, label=f"vary {axis}")
        lo = min(p["BKD"] for p in sw["points"])
        hi = max(p["BKD"] for p in sw["points"])
        ref = [p for p in sw["points"] if p["op"] == op]
        t_hi = max(1e3 * p["time_s"]["median"] for p in ref)
        ax.loglog([lo, hi], [t_hi * lo / hi, t_hi], "k:", label="∝ B·K·D")
        ax.set(title=f"{op} (fused, fwd+bwd)", xlabel="B·K·D", ylabel="ms")
        ax.legend()
    save(fig, "scaling.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for impl in ("fused", "reference"):
        pts = [(x["K"], x["peak_mb"].get(impl)) for x in sw["impute_memory"]]
        pts = [(k, max(v, 0.5)) for k, v in pts if v is not None]
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=impl)
    ax.set(title="model.impute peak extra memory", xlabel="K (importance samples)",
           ylabel="MB (floor 0.5)")
    ax.legend()
    save(fig, "memory_vs_k.png")
    return written


def run(suites=("all",), device: str = "cpu", out_dir="bench-results", quick: bool = False,
        threads: Optional[int] = None, repeats: Optional[int] = None,
        log: Callable[[str], None] = print) -> dict:
    """Runs the suites, writes bench.json, bench.md and the plots into ``out_dir``;
    returns the report (a dict, as in bench.json)."""
    from ._common.io import write_atomic
    suites = SUITES if "all" in suites else tuple(suites)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"argument 'suite' must be among {', '.join(SUITES + ('all',))}; "
                         f"got {unknown[0]!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("argument 'device' is 'cuda' but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"argument 'device' must be 'cpu' or 'cuda'; got {device!r}")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    repeats = repeats or (5 if quick else 15)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"machine": machine_info(device, threads), "quick": quick, "repeats": repeats,
              "suites": list(suites), "results": {}}
    for name in suites:
        log(f"== {name}")
        t0 = time.perf_counter()
        if name == "ops":
            report["results"]["ops"] = suite_ops(device, repeats, threads, quick, log)
        elif name == "train":
            report["results"]["train"] = suite_train(device, repeats, quick, log)
        elif name == "impute":
            report["results"]["impute"] = suite_impute(device, repeats, threads, quick, log)
        else:
            report["results"]["sweep"] = suite_sweep(device, repeats, threads, quick, log)
        report["results"][name]["seconds"] = time.perf_counter() - t0
        report["acceptance"] = acceptance(report["results"])
        report["seconds"] = time.perf_counter() - start
        # Written after every suite: a run stopped half-way keeps what it measured.
        write_atomic(out_dir / "bench.json", lambda f: json.dump(report, f, indent=2), text=True)
        write_atomic(out_dir / "bench.md", lambda f: f.write(markdown(report)), text=True)
    report["plots"] = plots(report, out_dir)
    write_atomic(out_dir / "bench.json", lambda f: json.dump(report, f, indent=2), text=True)
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        sys.exit("usage: notmiwae-fast bench ... (this module's own entry point is internal)")
