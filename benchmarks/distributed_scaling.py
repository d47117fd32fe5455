"""Training throughput with 1 and 2 processes (torch.distributed, gloo, CPU), one run.

NotMIWAE (self-masking, Gaussian, D = 11, hidden 128, K = 20) on 4096 rows of synthetic
data, batch 64 per process, one thread per process. Each configuration trains for
--epochs epochs after a warm-up epoch; rows/s counts the rows all processes together
consumed. Scaling efficiency = (rows/s with 2 processes) / (2 × rows/s with 1).

    python benchmarks/distributed_scaling.py [--epochs 3]

Writes benchmarks/results/distributed_scaling_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time

import torch
import torch.multiprocessing as mp
from _measure import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
D, ROWS, BATCH = 11, 4096, 64


def _worker(rank, world, port, epochs, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    import notmiwae_fast as nf

    torch.manual_seed(0)
    x = torch.randn(ROWS, D)
    s = (x <= 0.5).float()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x * s, s), batch_size=BATCH, shuffle=True
    )
    model = nf.NotMIWAE(D, hidden_dim=128, n_samples=20)
    trainer = nf.Trainer(model, progress=False)
    trainer.train(loader, n_epochs=1)  # warm-up
    start = time.perf_counter()
    trainer.train(loader, n_epochs=1 + epochs)
    seconds = time.perf_counter() - start
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"seconds": seconds, "rows": ROWS * epochs}, f)
    nf.distributed.shutdown()


def measure(world: int, epochs: int) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tempfile.mktemp(suffix=".json")
    mp.spawn(_worker, args=(world, port, epochs, out), nprocs=world, join=True)
    with open(out) as f:
        r = json.load(f)
    os.unlink(out)
    return {
        "processes": world,
        "threads_per_process": 1,
        "seconds": r["seconds"],
        "rows_per_s": r["rows"] / r["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "distributed_scaling_cpu"))
    args = parser.parse_args()
    rows = [measure(1, args.epochs), measure(2, args.epochs)]
    efficiency = rows[1]["rows_per_s"] / (2 * rows[0]["rows_per_s"])
    result = {
        "benchmark": "training throughput, 1 vs 2 processes (gloo, CPU)",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "batch_per_process": BATCH,
        "rows": ROWS,
        "epochs": args.epochs,
        "results": rows,
        "scaling_efficiency": efficiency,
    }
    lines = [
        f"# {result['benchmark']}",
        "",
        f"NotMIWAE D = {D}, hidden 128, K = 20, batch {BATCH} per process, {ROWS} rows, "
        f"{args.epochs} epochs; torch {torch.__version__}; {os.cpu_count()} CPUs.",
        "",
        "| processes | threads per process | rows/s |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['processes']} | {r['threads_per_process']} | {r['rows_per_s']:.0f} |" for r in rows
    ]
    lines += ["", f"Scaling efficiency (2 processes): {efficiency:.2f}"]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_report(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
