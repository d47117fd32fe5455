"""The clipped-pixel experiment on real photographs: not-MIWAE vs MIWAE vs filling with
the clip level, on a photograph held out of training.

Patches are cut from the photographs scikit-image ships (no download); values >= the clip
level are removed, both models are trained on the clipped patches, then the held-out
photograph is clipped the same way and imputed with impute_image. RMSE is over the
removed values, on the [0, 1] scale. Also saves the figure: clipped input, not-MIWAE,
MIWAE, truth.

    python benchmarks/image_clipping.py [--steps 1500] [--held-out coffee]

Writes benchmarks/results/image_clipping.{json,md,png} and the trained models
(image_notmiwae.pt, image_miwae.pt) under --model-dir.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from notmiwae_fast import images
from _measure import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                "immunohistochemistry", "retina"]


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--train-samples", type=int, default=10, help="K during training")
    parser.add_argument("--impute-samples", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clip-level", type=float, default=0.75)
    parser.add_argument("--out-dist", default="bern", choices=["bern", "gauss"])
    parser.add_argument("--held-out", default="coffee")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "image_clipping"))
    parser.add_argument("--model-dir", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = images.bundled_photographs(TRAIN_PHOTOS)
    held = photos.pop(args.held_out)
    patches = images.photo_patches(list(photos.values()), args.patch, 40_000)
    lost = held >= args.clip_level
    result = {"settings": vars(args), "torch": torch.__version__,
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "train_photos": sorted(photos), "held_out": args.held_out,
              "lost_fraction": float(lost.mean()),
              "rmse": {"clip level fill": rmse(np.full_like(held, args.clip_level), held, lost)},
              "seconds": {}}
    imputed = {}
    for kind in ("notmiwae", "miwae"):
        torch.manual_seed(0)
        model = images.image_model(kind, patch=args.patch, width=args.width,
                                   latent_dim=args.latent, n_samples=args.train_samples,
                                   out_dist=args.out_dist)
        start = time.time()
        images.train_on_patches(model, patches, clip_level=args.clip_level, steps=args.steps,
                                batch_size=args.batch, lr=1e-3)
        result["seconds"][f"train {kind}"] = time.time() - start
        torch.save(model, os.path.join(args.model_dir, f"image_{kind}.pt"))
        start = time.time()
        imputed[kind] = images.impute_image(model, held, clip_level=args.clip_level,
                                            n_samples=args.impute_samples, progress=False)
        result["seconds"][f"impute {kind}"] = time.time() - start
        result["rmse"][kind] = rmse(imputed[kind], held, lost)
        if kind == "notmiwae":
            result["learnt_missing_process"] = model.missing_model.interpret()
    lines = [f"# Clipped pixels (values >= {args.clip_level} removed), held-out photograph "
             f"'{args.held_out}'", "",
             f"{100 * result['lost_fraction']:.1f}% of the values removed; trained on "
             f"{len(photos)} other scikit-image photographs, {args.steps} steps of "
             f"{args.batch} patches of {args.patch}×{args.patch}, K = {args.train_samples}, "
             f"{args.out_dist} decoder; "
             f"imputed with K = {args.impute_samples}; torch {torch.__version__}, "
             f"{args.threads} threads.", "",
             "| method | RMSE on the removed values |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in sorted(result["rmse"].items(),
                                                                    key=lambda kv: kv[1])]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    figure(held, np.where(lost, args.clip_level, held), imputed, args.out + ".png")
    write_report(args.out, result, "\n".join(lines))


def figure(truth, clipped, imputed, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("clipped input", clipped), ("not-MIWAE", imputed["notmiwae"]),
              ("MIWAE", imputed["miwae"]), ("truth", truth)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
