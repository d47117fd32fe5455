"""Clipped-pixel imputation end to end: `notmiwae-fast impute-image` on a ≈5-megapixel
RGB photograph with the bundled model and default settings, its peak memory on a
50-megapixel one, and the model's arithmetic against the machine's measured peak.

The photographs are held-out ones (scikit-image's 'coffee', scikit-learn's 'china')
enlarged with Lanczos resampling to the size asked for and written as JPEG (quality 95),
as a camera would. Each command run is a fresh process (`python -m notmiwae_fast.cli
impute-image in.jpg out.jpg --clip-level 0.75 --threads T`): its wall time includes
starting Python and torch, reading and writing the files; its peak resident memory is
read from the child's rusage. The library call alone (`impute_image`, image already in
memory) is timed in this process for comparison, and with `--device cuda` on the GPU.

Roofline: the multiply-adds per lost pixel of the clipped-pixel model (encoder once,
decoder context once, K decoder samples) times the lost pixels, against the float32
matrix-product rate this machine reaches with the same threads (torch.mm, 2048²).

    python benchmarks/clipped_throughput.py [--repeats 3] [--threads 2] [--device cpu]

Writes benchmarks/results/clipped_throughput_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from notmiwae_fast import images

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _measure import write_report  # noqa: E402


def enlarged(name: str, megapixels: float) -> np.ndarray:
    """A held-out photograph enlarged to about ``megapixels`` (uint8 RGB)."""
    from PIL import Image

    photo = images.bundled_photographs([name])[name]
    h, w = photo.shape[:2]
    f = (megapixels * 1e6 / (h * w)) ** 0.5
    img = Image.fromarray(np.rint(photo * 255).astype(np.uint8))
    return np.asarray(img.resize((round(w * f), round(h * f)), Image.LANCZOS))


def run_command(src: str, dst: str, threads: int) -> tuple[float, float]:
    """(wall seconds, the child's peak resident MB) of one impute-image command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "notmiwae_fast.cli",
            "impute-image",
            src,
            dst,
            "--clip-level",
            "0.75",
            "--threads",
            str(threads),
            "--force",
            "--quiet",
        ],
        check=True,
    )  # the user's environment (no allocator settings)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def macs_per_lost_pixel(model: images.ClippedPixelModel, K: int) -> int:
    """Multiply-adds of one lost pixel's imputation."""
    enc = sum(
        m.in_features * m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)
    )
    ctx = model.decoder_context.in_features * model.decoder_context.out_features
    per_sample = (
        model.decoder_latent.in_features * model.decoder_latent.out_features
        + model.decoder_out.in_features * model.decoder_out.out_features
    )
    return enc + ctx + K * per_sample


def matmul_gflops(threads: int, device: str) -> float:
    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return float(np.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--megapixels", type=float, default=5.0)
    parser.add_argument("--large-megapixels", type=float, default=50.0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or os.path.join(HERE, "results", f"clipped_throughput_{args.device}")
    model = images.load_image_model()
    K = 10
    result = {
        "settings": vars(args),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "command": {},
        "library": {},
    }
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in ("coffee", "china"):
            img = enlarged(name, args.megapixels)
            mp = img.shape[0] * img.shape[1] / 1e6
            lost_px = int((img >= np.ceil(0.75 * 255)).any(axis=2).sum())
            src, dst = os.path.join(tmp, f"{name}.jpg"), os.path.join(tmp, f"{name}_out.jpg")
            Image.fromarray(img).save(src, quality=95)
            timings, peaks = [], []
            if args.device == "cpu":
                for _ in range(args.repeats):
                    seconds, peak = run_command(src, dst, args.threads)
                    timings.append(seconds)
                    peaks.append(peak)
            lib = []
            dev_model = model.to(args.device)
            for _ in range(args.repeats):
                torch.manual_seed(0)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                images.impute_image(dev_model, img, clip_level=0.75, progress=False)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                lib.append(time.perf_counter() - start)
            entry = {
                "megapixels": mp,
                "shape": list(img.shape),
                "lost_pixel_fraction": lost_px / (mp * 1e6),
                "library_seconds": lib,
                "library_megapixels_per_s": mp / float(np.median(lib)),
            }
            if timings:
                entry.update(
                    command_seconds=timings,
                    command_peak_mb=max(peaks),
                    command_megapixels_per_s=mp / float(np.median(timings)),
                )
            macs = macs_per_lost_pixel(model, K) * lost_px
            entry["model_gflop"] = 2 * macs / 1e9
            result["command" if timings else "library"][name] = entry
            rows.append((name, entry))
            print(name, {k: v for k, v in entry.items() if not isinstance(v, list)}, flush=True)
        model.to("cpu")
        large_entry = None
        if args.device == "cpu" and args.large_megapixels:
            img = enlarged("coffee", args.large_megapixels)
            src, dst = os.path.join(tmp, "large.jpg"), os.path.join(tmp, "large_out.jpg")
            Image.fromarray(img).save(src, quality=95)
            seconds, peak = run_command(src, dst, args.threads)
            large_entry = {
                "megapixels": img.shape[0] * img.shape[1] / 1e6,
                "seconds": seconds,
                "peak_mb": peak,
                "input_mb": img.nbytes / 2**20,
            }
            result["large"] = large_entry
            print("large", large_entry, flush=True)
    result["matmul_gflops"] = matmul_gflops(args.threads, args.device)
    result["load_average_after"] = os.getloadavg()
    write_report(out, result, markdown(result, rows, large_entry, args))


def markdown(result, rows, large, args) -> str:
    lines = [
        f"# Clipped-pixel imputation throughput ({args.device}, {args.threads} threads)",
        "",
        f"torch {result['torch']}, {result['cpus']} CPUs, load average "
        f"{result['load_average_before'][0]:.1f} before / "
        f"{result['load_average_after'][0]:.1f} after; bundled RGB model, K = 10, clip "
        f"level 0.75; {args.repeats} runs each (median, range).",
        "",
        "| photograph | megapixels | lost pixels | command MP/s | command s (range) | "
        "command peak MB | library MP/s | model GFLOP/s | share of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in rows:
        lib_s = float(np.median(e["library_seconds"]))
        rate = e["model_gflop"] / lib_s
        cmd = (
            f"{e['command_megapixels_per_s']:.2f} | {np.median(e['command_seconds']):.2f} "
            f"({min(e['command_seconds']):.2f}–{max(e['command_seconds']):.2f}) | "
            f"{e['command_peak_mb']:.0f}"
            if "command_seconds" in e
            else "– | – | –"
        )
        lines.append(
            f"| {name} (enlarged) | {e['megapixels']:.1f} | "
            f"{100 * e['lost_pixel_fraction']:.1f} % | {cmd} | "
            f"{e['library_megapixels_per_s']:.2f} | {rate:.1f} | "
            f"{rate / result['matmul_gflops']:.2f} |"
        )
    lines += [
        "",
        f"float32 matrix products (2048², torch.mm): {result['matmul_gflops']:.0f} "
        "GFLOP/s on this device with these threads.",
    ]
    if large:
        lines += [
            "",
            f"{large['megapixels']:.0f}-megapixel JPEG, the command end to end: "
            f"{large['seconds']:.1f} s, peak resident memory {large['peak_mb']:.0f} MB "
            f"(the decoded image alone is {large['input_mb']:.0f} MB, its output copy "
            "as much).",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
