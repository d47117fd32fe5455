"""Clipped pixels on photographs never used for training: not-MIWAE against the classical
fills, at several clip levels; also trains (and with --bundle ships) the bundled models.

Models (notmiwae_fast.images.ClippedPixelModel) learn from the training photographs
(images.TRAINING_PHOTOGRAPHS), brightened by the gains and clipped at the training clip
levels; they are evaluated on images.HELD_OUT_PHOTOGRAPHS, clipped at each evaluation
level: RMSE over the lost values, on the [0, 1] scale. Fills compared:

* clip level; censored normal per channel (a Tobit fit to the image's own values);
  biharmonic (scikit-image) and Telea (OpenCV) inpainting raised to the clip level —
  all from the clipped image alone;
* constant: the mean of the training photographs' values ≥ c (uses unclipped data);
* MIWAE (the same network, lost values treated as missing at random), not-MIWAE
  trained on clipped data only (the bundled model), not-MIWAE trained on complete
  photographs (their lost values known).

    python benchmarks/image_clipping.py            # about 10 minutes on 2 cores
    python benchmarks/image_clipping.py --bundle   # also rebuilds notmiwae_fast/data/*.pt

Writes benchmarks/results/image_clipping.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from notmiwae_fast import images

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _image_baselines as base  # noqa: E402
from _measure import write_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "notmiwae_fast", "data")
TRAIN_CLIPS = (0.6, 0.7, 0.75, 0.8, 0.9)
GAINS = (1.0, 1.3, 1.7)
MODELS = {
    "MIWAE": ("miwae", False),
    "not-MIWAE": ("notmiwae", False),
    "not-MIWAE (complete data)": ("notmiwae", True),
}
CLASSICAL = ("clip level", "censored normal", "biharmonic + raise", "Telea + raise")


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2)))


def pixels_of(photos: list, args):
    return images.training_pixels(
        photos, TRAIN_CLIPS, GAINS, per_image=args.per_image, seed=args.seed
    )


def train(kind: str, complete: bool, pixels, args, channels: int = 3):
    torch.manual_seed(args.seed)
    model = images.ClippedPixelModel(channels, kind=kind)
    start = time.time()
    losses = images.train_clipped(
        model, pixels, steps=args.steps, complete=complete, progress=False
    )
    return model, time.time() - start, float(np.mean(losses[-100:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument(
        "--per-image",
        type=int,
        default=40_000,
        help="training pixels per photograph, gain and clip level",
    )
    parser.add_argument("--clip-levels", type=float, nargs="+", default=[0.7, 0.75, 0.85])
    parser.add_argument("--n-samples", type=int, default=10, help="K when imputing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-biharmonic", action="store_true", help="skip the slow biharmonic inpainting"
    )
    parser.add_argument(
        "--bundle",
        action="store_true",
        help="write the not-MIWAE models (RGB and grey) as the bundled ones",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results", "image_clipping"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_photos = images.bundled_photographs(images.TRAINING_PHOTOGRAPHS)
    held = images.bundled_photographs(images.HELD_OUT_PHOTOGRAPHS)
    result = {
        "settings": vars(args),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "train_photos": sorted(train_photos),
        "held_out": list(held),
        "train_clip_levels": TRAIN_CLIPS,
        "gains": GAINS,
        "train_seconds": {},
        "rmse": {},
        "lost_fraction": {},
        "below_clip_level": {},
    }
    models = {}
    pixels = pixels_of(list(train_photos.values()), args)
    for name, (kind, complete) in MODELS.items():
        models[name], seconds, loss = train(kind, complete, pixels, args)
        result["train_seconds"][name] = seconds
        print(f"trained {name} in {seconds:.0f} s (final loss {loss:.3f})", flush=True)
    if args.bundle:
        images.save_image_model(models["not-MIWAE"], os.path.join(DATA, "clipped_pixels_rgb.pt"))
        grey_pixels = pixels_of([images.to_grey(p) for p in train_photos.values()], args)
        grey_model, seconds, _ = train("notmiwae", False, grey_pixels, args, 1)
        images.save_image_model(grey_model, os.path.join(DATA, "clipped_pixels_grey.pt"))
        print(f"wrote the bundled models to {DATA} (grey trained in {seconds:.0f} s)")
    figure_rows = []
    for c in args.clip_levels:
        constant = float(np.mean(np.concatenate([p[p >= c] for p in train_photos.values()])))
        for photo_name, img in held.items():
            lost = img >= c
            key = f"{c}/{photo_name}"
            result["lost_fraction"][key] = float(lost.mean())
            fills = {
                "clip level": base.clip_level_fill(img, lost, c),
                "censored normal": base.censored_normal_fill(img, lost, c),
                "Telea + raise": base.inpaint_fill(img, lost, c, "telea"),
                "constant (unclipped data)": base.constant_fill(img, lost, constant),
            }
            if not args.no_biharmonic:
                fills["biharmonic + raise"] = base.inpaint_fill(img, lost, c, "biharmonic")
            for name, model in models.items():
                torch.manual_seed(args.seed)
                fills[name] = images.impute_image(
                    model, img, clip_level=c, n_samples=args.n_samples, progress=False
                )
                result["below_clip_level"][f"{key}/{name}"] = int((fills[name][lost] < c).sum())
            result["rmse"][key] = {k: rmse(v, img, lost) for k, v in fills.items()}
            print(key, {k: round(v, 4) for k, v in result["rmse"][key].items()}, flush=True)
            if c == 0.75 and photo_name in ("grace_hopper", "china"):
                figure_rows.append((photo_name, img, fills["clip level"], fills["not-MIWAE"]))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    figure(figure_rows, args.out + ".png")
    write_report(args.out, result, markdown(result, args))


def markdown(result: dict, args) -> str:
    cols = [c for c in CLASSICAL if any(c in r for r in result["rmse"].values())]
    cols += ["constant (unclipped data)", *MODELS]
    lines = [
        "# Clipped pixels on held-out photographs",
        "",
        f"Trained on {', '.join(result['train_photos'])} (brightened ×{GAINS}, clipped "
        f"at {TRAIN_CLIPS}); held out: {', '.join(result['held_out'])}. "
        f"{args.steps} steps, K = {args.n_samples} when imputing; torch "
        f"{result['torch']}, {args.threads} threads, load average "
        f"{result['load_average'][0]:.1f}. RMSE on the lost values ([0, 1] scale); "
        "best of the clipped-data fills = the best of the first four columns.",
        "",
    ]
    for c in args.clip_levels:
        lines += [
            f"## Clip level {c}",
            "",
            "| photograph | lost | " + " | ".join(cols) + " | not-MIWAE / best fill |",
            "|---" * (len(cols) + 3) + "|",
        ]
        ratios, sums = [], {k: [] for k in cols}
        for key, r in result["rmse"].items():
            level, name = key.split("/")
            if float(level) != c:
                continue
            best = min(r[k] for k in CLASSICAL if k in r)
            ratios.append((r["not-MIWAE"], best))
            for k in cols:
                sums[k].append(r[k])
            lines.append(
                f"| {name} | {100 * result['lost_fraction'][key]:.1f} % | "
                + " | ".join(f"{r[k]:.4f}" for k in cols)
                + f" | {r['not-MIWAE'] / best:.2f} |"
            )
        mean_model = np.mean([m for m, _ in ratios])
        mean_best = np.mean([b for _, b in ratios])
        lines += [
            "| **mean** | | "
            + " | ".join(f"{np.mean(sums[k]):.4f}" for k in cols)
            + f" | {mean_model / mean_best:.2f} |",
            "",
        ]
    below = sum(result["below_clip_level"].values())
    lines.append(f"Imputed values below the clip level (any model, any photograph): {below}.")
    return "\n".join(lines)


def figure(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 4.2 * len(rows)), squeeze=False)
    for ax_row, (name, truth, clipped, imputed) in zip(axes, rows):
        for ax, (title, img) in zip(
            ax_row,
            [(f"{name}: clipped at 0.75", clipped), ("not-MIWAE", imputed), ("truth", truth)],
        ):
            ax.imshow(np.clip(img, 0, 1))
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    main()
