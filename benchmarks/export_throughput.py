"""Rows per second of the exported imputers against eager PyTorch, on the CPU, one run.

A NotMIWAE (self-masking, Gaussian, D = 11, hidden 128) imputes the same 4096 rows with
K = 1000 importance samples, in batches of 256, as: eager (model.impute), TorchScript
(fused kernels), TorchScript (pure PyTorch) and ONNX Runtime (pure math). The
implementations are interleaved in rounds; median and inter-quartile range are reported.

    python benchmarks/export_throughput.py [--threads 2] [--rounds 5]

Writes benchmarks/results/export_throughput_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from _measure import write_report

import notmiwae_fast as nf
from notmiwae_fast import export

HERE = os.path.dirname(os.path.abspath(__file__))
D, K, ROWS, BATCH = 11, 1000, 4096, 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "export_throughput_cpu"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nf.NotMIWAE(D, hidden_dim=128, n_samples=20)
    model.n_train_steps += 1  # timing only: the weights do not matter
    x = torch.randn(ROWS, D)
    s = (x <= 0.5).float()
    batches = [(x[i : i + BATCH], s[i : i + BATCH]) for i in range(0, ROWS, BATCH)]
    tmp = tempfile.mkdtemp()
    fused = export.to_torchscript(model, os.path.join(tmp, "f.pt"), n_samples=K)
    pure = export.to_torchscript(model, os.path.join(tmp, "p.pt"), n_samples=K, fused=False)
    runners = {
        "eager (model.impute)": lambda xb, sb: model.impute(xb, sb, n_samples=K),
        "TorchScript, fused kernels": lambda xb, sb: fused(xb, sb),
        "TorchScript, pure PyTorch": lambda xb, sb: pure(xb, sb),
    }
    try:
        import onnxruntime as ort

        export.to_onnx(model, os.path.join(tmp, "m.onnx"), n_samples=K)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(
            os.path.join(tmp, "m.onnx"), options, providers=["CPUExecutionProvider"]
        )
        runners["ONNX Runtime"] = lambda xb, sb: session.run(
            None, {"x": xb.numpy(), "mask": sb.numpy()}
        )[0]
    except ImportError:
        pass
    rates = {name: [] for name in runners}
    with torch.no_grad():
        for run in runners.values():  # warm-up
            run(*batches[0])
        for _ in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                for xb, sb in batches:
                    run(xb, sb)
                rates[name].append(ROWS / (time.perf_counter() - start))
    summary = {}
    for name, values in rates.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        summary[name] = {"median": statistics.median(values), "q1": q[0], "q3": q[2]}
    result = {
        "benchmark": f"imputation rows/s, D = {D}, K = {K}, batch {BATCH}, {ROWS} rows",
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows_per_s": summary,
    }
    eager = summary["eager (model.impute)"]["median"]
    lines = [
        f"# {result['benchmark']}",
        "",
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; "
        f"median [IQR] over {args.rounds} interleaved rounds.",
        "",
        "| imputer | rows/s | vs eager |",
        "|---|---|---|",
    ]
    for name, q in summary.items():
        lines.append(
            f"| {name} | {q['median']:.0f} [{q['q1']:.0f}–{q['q3']:.0f}] | "
            f"{q['median'] / eager:.2f}× |"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_report(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
