"""Aligned face crops: a similarity warp of eye, nose (and mouth) points to a template.

The template is the ArcFace 5-point template that DeepfakeBench's
``img_align_crop`` uses (112 px, +8 px in x), scaled to the output size and
shrunk by the crop margin (1.3 in DeepfakeBench), so crops are comparable with
the benchmark's. The transform is the least-squares similarity (rotation,
uniform scale, shift; Umeyama) of the anchors onto the template, so a rolled
head comes out level. Unaligned crops are squares around the face box, described
by the same kind of 2x3 matrix, so a user maps stored points back to the source
frame the same way either way (:func:`invert`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["ARCFACE_112", "box_transform", "invert", "similarity", "smooth_runs", "template", "transform_points", "warp"]

#: ArcFace's 5 points in a 112x112 image: image-left eye, image-right eye, nose, mouth left, mouth right.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template(size: int, margin: float = 1.3, num_points: int = 5) -> np.ndarray:
    """The template points for a ``size`` px crop with ``margin`` (DeepfakeBench's formula).

    Args:
        size: Output side in pixels.
        margin: Crop scale around the face (1.0 = ArcFace's tight crop).
        num_points: 3 (eyes and nose) or 5 (with the mouth corners).
    """
    dst = ARCFACE_112[:num_points] * (size / 112.0)
    pad = size * (margin - 1.0) / 2.0
    return (dst + pad) * (size / (size + 2.0 * pad))


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama), as 2x3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def box_transform(crop: Sequence[float], size: int) -> np.ndarray:
    """The 2x3 matrix of an unaligned square crop ``(x0, y0, x1, y1)`` resized to ``size``."""
    x0, y0, x1, y1 = (float(v) for v in crop)
    k = size / max(x1 - x0, 1e-6)
    return np.array([[k, 0.0, -k * x0], [0.0, k, -k * y0]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to (K, 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: Sequence[Sequence[float]]) -> np.ndarray:
    """The 2x3 matrix mapping crop pixels back to source-frame pixels."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def warp(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp one frame into a ``size`` x ``size`` crop (zeros outside the frame)."""
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def smooth_runs(values: np.ndarray, present: Sequence[bool], shots: Sequence[int], window: int = 3) -> np.ndarray:
    """Centred moving average over time within each run of present frames of one shot.

    The window stays symmetric (narrower near a run's ends), so a face moving at a
    steady speed is not pulled behind.

    Args:
        values: (T, ...) float array.
        present: Per frame, whether it has a value.
        shots: First frame of each shot (runs never cross a cut).
        window: Odd window length.
    """
    out = np.array(values, dtype=np.float64, copy=True)
    if window <= 1:
        return out
    starts = set(shots)
    n, half = len(present), window // 2
    i = 0
    while i < n:
        if not present[i]:
            i += 1
            continue
        j = i + 1
        while j < n and present[j] and j not in starts:
            j += 1
        run = np.asarray(values[i:j], dtype=np.float64)
        csum = np.concatenate([np.zeros((1, *run.shape[1:])), np.cumsum(run, axis=0)])
        idx = np.arange(len(run))
        # A symmetric window, narrowed near the run's ends: no lag on steady motion.
        reach = np.minimum(np.minimum(idx, len(run) - 1 - idx), half)
        lo, hi = idx - reach, idx + reach + 1
        shape = (-1,) + (1,) * (run.ndim - 1)
        out[i:j] = (csum[hi] - csum[lo]) / (hi - lo).reshape(shape)
        i = j
    return out
