"""Classical fills of clipped values, for the clipped-pixel evaluation (benchmark-only:
they need SciPy, scikit-image and OpenCV). Each takes a float image [H, W, C] in [0, 1],
its lost mask (True = lost, i.e. ≥ the clip level) and the clip level, and returns the
image with the lost values filled."""

from __future__ import annotations

import numpy as np


def clip_level_fill(img: np.ndarray, lost: np.ndarray, c: float) -> np.ndarray:
    """Every lost value set to the clip level (what the clipped photograph shows)."""
    return np.where(lost, c, img)


def censored_normal_fill(img: np.ndarray, lost: np.ndarray, c: float) -> np.ndarray:
    """Per channel, a normal distribution fitted by maximum likelihood to the image's own
    values with the lost ones censored at c (a Tobit fit); each lost value filled with
    E[x | x ≥ c] under it, capped at 1."""
    from scipy import optimize, special, stats

    out = img.astype(np.float64).copy()
    for ch in range(img.shape[2]):
        m = lost[..., ch]
        n_lost = int(m.sum())
        if n_lost == 0:
            continue
        xo = img[..., ch][~m].astype(np.float64)
        if xo.size < 2:
            out[..., ch][m] = c
            continue

        def nll(p, xo=xo, n_lost=n_lost):
            mu, s = p[0], np.exp(p[1])
            return -(stats.norm.logpdf(xo, mu, s).sum() + n_lost * special.log_ndtr((mu - c) / s))

        fit = optimize.minimize(nll, [xo.mean(), np.log(xo.std() + 1e-3)], method="Nelder-Mead")
        mu, s = fit.x[0], float(np.exp(fit.x[1]))
        a = (c - mu) / s
        mean = mu + s * np.exp(stats.norm.logpdf(a) - special.log_ndtr(-a))
        out[..., ch][m] = min(max(mean, c), 1.0)
    return out


def inpaint_fill(img: np.ndarray, lost: np.ndarray, c: float, method: str) -> np.ndarray:
    """Inpainting of every pixel with a lost value (``"telea"``: OpenCV's Telea,
    radius 3, on 8 bits; ``"biharmonic"``: scikit-image's), then raised to the clip
    level (a lost value is known to be at least c); observed values kept."""
    any_lost = lost.any(axis=2)
    if method == "telea":
        import cv2

        u8 = np.rint(img * 255).astype(np.uint8)
        filled = cv2.inpaint(u8, any_lost.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        filled = filled.reshape(img.shape).astype(np.float64) / 255
    elif method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        filled = inpaint_biharmonic(np.where(lost, c, img), any_lost, channel_axis=-1)
    else:
        raise ValueError(f"unknown inpainting method {method!r}")
    return np.where(lost, np.maximum(filled, c), img)


def constant_fill(img: np.ndarray, lost: np.ndarray, value: float) -> np.ndarray:
    """Every lost value set to one constant."""
    return np.where(lost, value, img)
