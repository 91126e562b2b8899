"""MTCNN face detector from ``facenet-pytorch`` (its 2 MB of weights ship in the wheel).

``facenet-pytorch==2.5.3`` runs on the project's torch (2.6.0 pins torch<2.3). The
detector is a CNN cascade with 5 landmarks per face; measured on one core it is
slower than dlib HOG on CPU (27-61 ms at 224 px against 6-8) but finds faces
HOG misses (profile-ish, small, rolled). On a CUDA device it runs batched:
:meth:`MTCNNDetector.detect_many` sends frames of one size through the network
together, and the tracker uses it for a shot's scheduled detections. Without a
GPU (or with ``device: cpu``) the same code runs on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from src.errors import ConfigError
from src.preprocessing.faces import Box, FaceDetector

__all__ = ["MTCNNDetector", "resolve_device"]


def resolve_device(device: str | None) -> str:
    """``cuda`` when available and not overridden, else ``cpu``."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class MTCNNDetector(FaceDetector):
    """facenet-pytorch's MTCNN.

    Args:
        max_side: See :class:`~src.preprocessing.faces.FaceDetector`.
        min_face_size: Smallest face MTCNN searches, in the pixels it sees.
        thresholds: Score thresholds of its three stages.
        device: ``cuda``, ``cpu`` or None (CUDA when there is one).
    """

    name = "mtcnn"
    batched = True
    #: On a Ray cluster with GPUs, each actor asks for this share of one (four actors per GPU); none without.
    gpu_share = 0.25

    def __init__(self, max_side: int = 320, min_face_size: int = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.8), device: str | None = None) -> None:
        super().__init__(max_side)
        if min_face_size < 8:
            raise ConfigError(f"min_face_size must be >= 8, got {min_face_size!r}")
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.device = device

    @property
    def native_min_face(self) -> int:  # type: ignore[override]
        return self.min_face_size

    def _build(self) -> Any:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise ConfigError(f"faces.detector mtcnn needs facenet-pytorch==2.5.3 ({exc})") from None
        return MTCNN(keep_all=True, device=resolve_device(self.device), min_face_size=self.min_face_size, thresholds=list(self.thresholds), post_process=False)

    @staticmethod
    def _boxes(boxes: Any, probs: Any) -> list[Box]:
        if boxes is None:
            return []
        return [Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(p)) for b, p in zip(boxes, probs, strict=True) if b is not None]

    def _detect(self, model: Any, frame_rgb: np.ndarray) -> list[Box]:
        boxes, probs = model.detect(frame_rgb)
        return self._boxes(boxes, probs)

    def detect_many(self, images: Sequence[np.ndarray], scale: float) -> list[list[Box]]:
        """Detect in several same-sized images at once (one network pass per stage).

        Args:
            images: uint8 RGB images of one shape.
            scale: Resize factor applied before detection.

        Returns:
            Per image, boxes in the images' own pixels.
        """
        if not images:
            return []
        if self._model is None:
            self._model = self._build()
        h, w = images[0].shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resized = [np.ascontiguousarray(cv2.resize(im, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)) if abs(scale - 1) > 1e-3 else im for im in images]
        boxes, probs = self._model.detect(np.stack(resized))
        inv = 1.0 / scale if abs(scale - 1) > 1e-3 else 1.0
        return [[Box(b.x0 * inv, b.y0 * inv, b.x1 * inv, b.y1 * inv, b.score) for b in self._boxes(bx, pr)] for bx, pr in zip(boxes, probs, strict=True)]
