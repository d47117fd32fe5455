"""Time and peak memory of the likelihood operators, fused vs eager vs torch.compile,
written to benchmarks/results/likelihood_<device>.json and .md.

    PYTHONPATH=. python benchmarks/likelihood_report.py [--threads 2] [--repeats 15]

For every operator × shape (likelihood_cases.py) fresh worker processes run the three
variants (fused kernel, reference in eager PyTorch, reference under torch.compile)
forward + backward, after checking each against the eager reference and warming it up
(the torch.compile variant compiles during the warm-up; its compile time is reported
apart): one worker times the three, another measures their memory. Time ratios are
between variants timed in the same worker, with the thread count fixed
(torch.set_num_threads), as timings on a shared machine drift between runs.

Time: median and interquartile range over ``--repeats`` runs of forward + backward
(CUDA: synchronised before each clock read). Workers run with OMP_WAIT_POLICY=PASSIVE
(--omp-wait-policy): on a small machine shared with other jobs, OpenMP workers
spinning after a parallel region otherwise steal the core of the main thread and
slow the many small eager ops down by an order of magnitude (measured: 24 ms instead
of 1.5 ms for the tabular eager reference).

Peak extra memory: the most memory held at once during one forward + backward beyond
what was held before it (inputs and parameters), including the outputs and the
gradients it returns.
* CPU: the process's resident set. The memory worker runs with
  MALLOC_MMAP_THRESHOLD_=65536, so glibc maps every tensor buffer separately and
  returns it on free (RSS then follows the live tensors, not the allocator's cache;
  this slows allocation down, so that worker does no timing); the kernel's peak-RSS counter
  (VmHWM) is reset through /proc/self/clear_refs just before the measured run, and the
  result is VmHWM after the run minus VmRSS before it. Its resolution is a page, and
  buffers under 64 KiB come from the heap, which may have room already: the tabular
  shapes (tensors of 14-110 KiB) read as about 0 and are not meaningful; the image
  shape (15 MiB per [B, K, D] tensor) is.
* CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus
  memory_allocated before the run.

The script runs on a GPU as well when one is present (--devices cpu,cuda).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


# --------------------------------------------------------------------------------------
# Worker: one operator × shape × device, all variants.
# --------------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def _peak_extra_bytes(run, device: str) -> int:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del out
        return peak - before
    before = _proc_status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident set
    out = run()
    peak = _proc_status_kb("VmHWM")
    del out
    return (peak - before) * 1024


def _times(run, device: str, repeats: int) -> list[float]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def worker(mode: str, op: str, shape: str, device: str, threads: int, repeats: int) -> dict:
    """mode "time": median / IQR of each variant; mode "memory": its peak extra memory."""
    import torch

    from likelihood_cases import SHAPES, VARIANTS, check_against_eager, forward_backward, \
        implementation, make_case

    torch.set_num_threads(threads)
    case = make_case(op, *SHAPES[shape], device=device)
    result = {}
    for variant in VARIANTS:
        run = forward_backward(implementation(op, variant), case)
        t0 = time.perf_counter()
        check_against_eager(op, run, case)  # first call: compiles the compile variant
        first_call = time.perf_counter() - t0
        for _ in range(2):
            run()
        if mode == "memory":
            result[variant] = dict(peak_extra_mb=_peak_extra_bytes(run, device) / 2**20)
            continue
        times = _times(run, device, repeats)
        q = statistics.quantiles(times, n=4)
        result[variant] = dict(median_ms=statistics.median(times) * 1e3,
                               q1_ms=q[0] * 1e3, q3_ms=q[2] * 1e3,
                               iqr_ms=(q[2] - q[0]) * 1e3, first_call_s=first_call)
    return result


# --------------------------------------------------------------------------------------
# Driver: one worker per case, then the JSON and the Markdown table.
# --------------------------------------------------------------------------------------
def _machine() -> dict:
    import torch

    import notmiwae_fast

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), torch=torch.__version__,
                notmiwae_fast_backend=str(notmiwae_fast.backend()),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Likelihood operators: fused vs eager vs torch.compile ({report['device']})", "",
             f"- machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}"
             + (f", GPU {m['gpu']}" if "gpu" in m else ""),
             f"- torch {m['torch']}, Python {m['python']}; "
             f"notmiwae_fast {m['notmiwae_fast_backend']}",
             f"- threads: {report['threads']} (torch.set_num_threads); "
             f"repeats: {report['repeats']};"
             f" float32; OMP_WAIT_POLICY={report['omp_wait_policy']}; date {m['date']}",
             "- time: forward + backward, median (IQR) in ms; memory: peak extra MiB during one"
             " forward + backward (see likelihood_report.py for the method)",
             "- speed-up = time of the variant / time of fused (> 1: fused is faster);"
             " memory ratio = fused / variant (< 1: fused holds less)",
             "- CPU memory is read from the resident set (page resolution; buffers under"
             " 64 KiB come from the heap): the tabular shapes read as about 0 MiB and are"
             " not meaningful, the image shape is", "",
             "| op | shape (B, K, D) | fused ms | eager ms | compile ms | eager/fused | "
             "compile/fused | fused MiB | eager MiB | compile MiB | fused/eager mem | "
             "fused/compile mem | compile first call s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        v = r["variants"]
        f, e, c = v["fused"], v["eager"], v["compile"]

        def t(x):
            return f"{x['median_ms']:.3f} ({x['iqr_ms']:.3f})"

        def ratio(a, b):
            return f"{a / b:.2f}" if b > 0 else "n/a"

        lines.append(
            f"| {r['op']} | {r['shape']} {tuple(r['dims'])} | {t(f)} | {t(e)} | {t(c)} | "
            f"{ratio(e['median_ms'], f['median_ms'])} | "
            f"{ratio(c['median_ms'], f['median_ms'])} | "
            f"{f['peak_extra_mb']:.2f} | {e['peak_extra_mb']:.2f} | {c['peak_extra_mb']:.2f} | "
            f"{ratio(f['peak_extra_mb'], e['peak_extra_mb'])} | "
            f"{ratio(f['peak_extra_mb'], c['peak_extra_mb'])} | {c['first_call_s']:.1f} |")
    lines += ["", "## Acceptance (notmiwae_normal_terms, forward + backward)", ""]
    for line in report["acceptance"]:
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def _acceptance(results: list[dict]) -> list[str]:
    out = []
    by_shape = {r["shape"]: r["variants"] for r in results if r["op"] == "notmiwae_normal_terms"}
    if "image-B16" in by_shape:
        v = by_shape["image-B16"]
        speed = v["eager"]["median_ms"] / v["fused"]["median_ms"]
        mem = v["fused"]["peak_extra_mb"] / v["eager"]["peak_extra_mb"]
        vs_compile = v["compile"]["median_ms"] / v["fused"]["median_ms"]
        out.append(f"image B=16, K=20, D=12288: {speed:.2f}x faster than eager (target >= 3): "
                   f"{'PASS' if speed >= 3 else 'FAIL'}; peak extra memory {mem:.3f} of eager's "
                   f"(target <= 1/3): {'PASS' if mem <= 1 / 3 else 'FAIL'}; "
                   f"torch.compile / fused time = {vs_compile:.2f}")
    if "tabular-B128" in by_shape:
        v = by_shape["tabular-B128"]
        speed = v["eager"]["median_ms"] / v["fused"]["median_ms"]
        vs_compile = v["compile"]["median_ms"] / v["fused"]["median_ms"]
        out.append(f"tabular B=128, K=20, D=11: {speed:.2f}x faster than eager (target >= 2): "
                   f"{'PASS' if speed >= 2 else 'FAIL'}; torch.compile / fused time = "
                   f"{vs_compile:.2f}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per variant (15)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated: cpu, cuda (default: cpu, and cuda if present)")
    parser.add_argument("--ops", default=None, help="comma-separated subset of the operators")
    parser.add_argument("--shapes", default=None, help="comma-separated subset of the shapes")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of the workers (PASSIVE); '' leaves it unset")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--render", metavar="JSON",
                        help="only rewrite the Markdown of an existing JSON report")
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "OP", "SHAPE", "DEVICE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.repeats)))
        return 0
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        report["acceptance"] = _acceptance(report["results"])
        with open(os.path.splitext(args.render)[0] + ".md", "w") as f:
            f.write(_markdown(report))
        return 0

    import torch

    from likelihood_cases import OPS, SHAPES

    devices = args.devices.split(",") if args.devices else (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ops = args.ops.split(",") if args.ops else OPS
    shapes = args.shapes.split(",") if args.shapes else list(SHAPES)
    os.makedirs(args.out_dir, exist_ok=True)

    def run_worker(mode, op, shape, device):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, op, shape, device,
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
        env = dict(os.environ)
        if args.omp_wait_policy:
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
        if mode == "memory":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"worker failed: {mode} {op} {shape} {device}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    for device in devices:
        results = []
        for op in ops:
            for shape in shapes:
                variants = run_worker("time", op, shape, device)
                for name, mem in run_worker("memory", op, shape, device).items():
                    variants[name].update(mem)
                results.append(dict(op=op, shape=shape, dims=list(SHAPES[shape]),
                                    variants=variants))
                print(f"{device} {op} {shape}: " + ", ".join(
                    f"{k} {v['median_ms']:.3f} ms / {v['peak_extra_mb']:.1f} MiB"
                    for k, v in variants.items()), flush=True)
        report = dict(device=device, threads=args.threads, repeats=args.repeats,
                      omp_wait_policy=args.omp_wait_policy or None,
                      machine=_machine(), results=results, acceptance=_acceptance(results))
        stem = os.path.join(args.out_dir, f"likelihood_{device}")
        with open(stem + ".json", "w") as f:
            json.dump(report, f, indent=2)
        with open(stem + ".md", "w") as f:
            f.write(_markdown(report))
        print("\n".join(report["acceptance"]))
        print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
