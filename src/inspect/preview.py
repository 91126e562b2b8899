"""A contact sheet of random clips: one row per sample, evenly spaced frames, a caption.

The sheet's geometry is fixed by its arguments so it can be checked: every
frame is letterboxed into a ``tile`` x ``tile`` square, each row is a caption
band of :data:`CAPTION_HEIGHT` pixels above ``frames`` tiles, so the image is
``frames * tile`` pixels wide and ``rows * (CAPTION_HEIGHT + tile)`` high.
Clips shorter than ``frames`` leave the remaining tiles grey; a sample that
cannot be decoded gets a grey row whose caption gives the reason.

OpenCV is imported inside the functions that draw, so importing this module
costs nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.data.storage import Storage
from src.inspect.info import LABEL_NAMES
from src.inspect.stores import one_line

__all__ = [
    "CAPTION_HEIGHT",
    "PreviewSheet",
    "select_keys",
    "frame_indices",
    "clip_frames",
    "caption",
    "contact_sheet",
    "write_png",
]

logger = logging.getLogger(__name__)

CAPTION_HEIGHT = 22
_BACKGROUND = (48, 48, 48)  # RGB of empty tiles and caption bands
_TEXT = {0: (120, 230, 120), 1: (255, 120, 120)}  # caption colour by label: green real, red fake
_ERROR_TEXT = (255, 200, 0)


@dataclass
class PreviewSheet:
    """A rendered contact sheet.

    Attributes:
        image: RGB image, uint8, shape (height, width, 3).
        keys: The samples shown, one per row, top to bottom.
        failed: ``{key: reason}`` for rows whose sample could not be decoded.
    """

    image: np.ndarray
    keys: list[str]
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


def select_keys(keys: list[str], num: int, seed: int) -> list[str]:
    """Pick ``num`` keys at random (all of them when there are fewer), in store order.

    Args:
        keys: All keys of the store.
        num: How many to pick.
        seed: Seed of the choice; the same seed picks the same keys.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1; got {num}")
    ordered = sorted(keys)
    if len(ordered) <= num:
        return ordered
    chosen = np.random.default_rng(seed).choice(len(ordered), size=num, replace=False)
    return [ordered[i] for i in sorted(chosen)]


def frame_indices(num_frames: int, k: int) -> list[int]:
    """Up to ``k`` evenly spaced frame indices of a clip with ``num_frames`` frames, first and last included."""
    if num_frames <= 0 or k <= 0:
        return []
    n = min(k, num_frames)
    if n == 1:
        return [0]
    return [int(round(i * (num_frames - 1) / (n - 1))) for i in range(n)]


def clip_frames(data: np.ndarray) -> np.ndarray:
    """A clip as RGB uint8 frames, shape (T, H, W, 3).

    Accepts the project's (C, T, H, W) layout with C in {1, 3}, (T, H, W, C)
    with C in {1, 3} and grey (T, H, W). Non-uint8 clips are scaled from their
    own value range.

    Raises:
        ValueError: Any other shape.
    """
    array = np.asarray(data)
    if array.ndim == 4 and array.shape[0] in (1, 3):
        frames = np.moveaxis(array, 0, -1)
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        frames = array
    elif array.ndim == 3:
        frames = array[..., None]
    else:
        raise ValueError(f"cannot show a clip of shape {array.shape}; expected (C, T, H, W) or (T, H, W[, C])")
    if frames.dtype != np.uint8:
        frames = frames.astype(np.float32)
        low, high = (float(frames.min()), float(frames.max())) if frames.size else (0.0, 1.0)
        frames = ((frames - low) * (255.0 / (high - low) if high > low else 0.0)).clip(0, 255).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames


def _letterbox(frame: np.ndarray, tile: int) -> np.ndarray:
    import cv2

    out = np.empty((tile, tile, 3), np.uint8)
    out[:] = _BACKGROUND
    h, w = frame.shape[:2]
    if h == 0 or w == 0:
        return out
    scale = tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(frame), (nw, nh), interpolation=interp)
    top, left = (tile - nh) // 2, (tile - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def caption(key: str, label: Any, metadata: dict[str, Any]) -> str:
    """``sample_000001  fake  fsgan-wav2lip  face_found=True`` (with ``coverage=0.50`` when stored)."""
    name = LABEL_NAMES.get(label, f"label {label}") if isinstance(label, int) else f"label {label}"
    text = f"{key}  {name}  {metadata.get('method', '?')}  face_found={metadata.get('face_found', '?')}"
    coverage = metadata.get("face_coverage")
    return text + (f"  coverage={coverage:.2f}" if isinstance(coverage, (int, float)) and coverage < 1 else "")


#: Colour of the "no face" mark and of drawn landmarks.
_NO_FACE = (235, 60, 60)
_LANDMARK = (60, 230, 90)


def _annotate(tile_img: np.ndarray, frame_shape: tuple[int, ...], present: bool | None, points: np.ndarray | None) -> None:
    """Mark a frame without the face (red frame and cross) and draw landmarks, in place."""
    import cv2

    tile = tile_img.shape[0]
    if present is False:
        cv2.rectangle(tile_img, (0, 0), (tile - 1, tile - 1), _NO_FACE, 2)
        cv2.line(tile_img, (0, 0), (tile - 1, tile - 1), _NO_FACE, 1, cv2.LINE_AA)
        cv2.line(tile_img, (0, tile - 1), (tile - 1, 0), _NO_FACE, 1, cv2.LINE_AA)
        cv2.putText(tile_img, "no face", (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _NO_FACE, 1, cv2.LINE_AA)
    if points is not None:
        h, w = frame_shape[:2]
        scale = tile / max(h, w)
        top, left = (tile - round(h * scale)) // 2, (tile - round(w * scale)) // 2
        for x, y in np.asarray(points, dtype=np.float64):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(tile_img, (int(round(left + x * scale)), int(round(top + y * scale))), 1, _LANDMARK, -1, cv2.LINE_AA)


def _draw_row(
    key: str,
    text: str,
    colour: tuple[int, int, int],
    frames: np.ndarray | None,
    k: int,
    tile: int,
    presence: list | None = None,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    import cv2

    row = np.empty((CAPTION_HEIGHT + tile, k * tile, 3), np.uint8)
    row[:] = _BACKGROUND
    cv2.putText(row, text, (4, CAPTION_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    if frames is not None:
        for i, t in enumerate(frame_indices(len(frames), k)):
            cell = _letterbox(frames[t], tile)
            present = bool(presence[t]) if presence is not None and t < len(presence) else None
            points = landmarks[t] if landmarks is not None and t < len(landmarks) else None
            _annotate(cell, frames[t].shape, present, points)
            row[CAPTION_HEIGHT:, i * tile : (i + 1) * tile] = cell
    return row


def _landmarks(metadata: dict[str, Any]) -> np.ndarray | None:
    raw = metadata.get("landmarks")
    if raw is None:
        return None
    try:
        points = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return points if points.ndim == 3 and points.shape[-1] == 2 else None


def contact_sheet(store: Storage, num: int = 8, seed: int = 0, frames: int = 8, tile: int = 128, landmarks: bool = False) -> PreviewSheet:
    """Render random samples of a store as a contact sheet.

    Frames whose ``face_presence`` is false are crossed out in red and labelled
    "no face"; with ``landmarks`` the stored landmarks are drawn in green.

    Args:
        store: An open store of any format.
        num: Samples (rows) to show.
        seed: Seed of the sample choice.
        frames: Frames per row, evenly spaced over the clip.
        tile: Side of each frame's square tile in pixels.
        landmarks: Draw the stored landmarks (metadata ``landmarks``, crop pixels).

    Returns:
        The sheet; damaged samples appear as captioned grey rows and in ``failed``.

    Raises:
        ValueError: Non-positive ``num``, ``frames`` or ``tile``, or a store with no samples.
    """
    if frames < 1 or tile < 8:
        raise ValueError(f"frames must be >= 1 and tile >= 8 pixels; got frames={frames}, tile={tile}")
    keys = select_keys(store.get_all_keys(), num, seed)
    if not keys:
        raise ValueError(f"{store.path}: the store has no samples to preview")
    rows = []
    failed: dict[str, str] = {}
    for key in keys:
        try:
            sample = store.retrieve_sample(key, verify=True)
            clip = clip_frames(sample["data"])
            meta = sample["metadata"]
            rows.append(
                _draw_row(
                    key,
                    caption(key, sample["label"], meta),
                    _TEXT.get(sample["label"], (230, 230, 230)),
                    clip,
                    frames,
                    tile,
                    presence=meta.get("face_presence"),
                    landmarks=_landmarks(meta) if landmarks else None,
                )
            )
        except Exception as exc:  # show the damage in the sheet rather than stop the preview
            reason = one_line(exc)
            failed[key] = reason
            logger.debug("%s: cannot show %s: %s", store.path, key, reason)
            rows.append(_draw_row(key, f"{key}  UNREADABLE: {reason}", _ERROR_TEXT, None, frames, tile))
    return PreviewSheet(image=np.concatenate(rows, axis=0), keys=keys, failed=failed)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as a PNG file.

    Raises:
        ValueError: The image cannot be encoded.
        OSError: The file cannot be written.
    """
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as PNG")
    out = Path(path)
    out.write_bytes(buf.tobytes())
    return out
