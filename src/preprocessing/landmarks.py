"""Facial landmark models whose weights ship in a pip package, behind a registry.

``face-recognition-models==0.3.0`` ships dlib's shape predictors:

* ``dlib5``: 5 points (two corners of each eye, the base of the nose), public
  domain; about 3 ms per face; the default.
* ``dlib68``: the 68 iBUG 300-W points; trained on 300-W, whose licence
  **excludes commercial use**; about 5 ms per face.

The package's ``__init__`` imports ``pkg_resources``, which current setuptools
lacks, so its files are located with :func:`importlib.util.find_spec` instead of
importing it. Every model maps its points to the alignment anchors
(:meth:`LandmarkModel.anchors`): the image-left eye centre, the image-right eye
centre, the nose, and (68 points only) the two mouth corners.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from src.errors import ConfigError
from src.preprocessing.faces import Box
from src.registry import Registry

__all__ = ["LANDMARKERS", "Dlib5Landmarks", "Dlib68Landmarks", "LandmarkModel", "create_landmarker", "model_path"]


def model_path(filename: str) -> str:
    """Path of a model file inside ``face_recognition_models`` (without importing it).

    Raises:
        ConfigError: The package or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("landmarks need the face-recognition-models package (pip install face-recognition-models==0.3.0), or faces.landmarks: null")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not os.path.isfile(path):
        raise ConfigError(f"landmark model file missing: {path}")
    return path


@functools.lru_cache(maxsize=4)
def _predictor(filename: str) -> Any:
    import dlib  # deferred: only landmark models need it

    return dlib.shape_predictor(model_path(filename))


class LandmarkModel(ABC):
    """Predicts points of one face given its box; register subclasses in :data:`LANDMARKERS`."""

    name: ClassVar[str]
    num_points: ClassVar[int]

    @abstractmethod
    def predict(self, frame_rgb: np.ndarray, box: Box) -> np.ndarray:
        """Return float32 (K, 2) points in frame pixels."""

    @abstractmethod
    def anchors(self, points: np.ndarray) -> np.ndarray:
        """Alignment anchors from the points: (3, 2) eyes + nose, or (5, 2) with the mouth corners."""

    def load(self) -> None:  # noqa: B027 - optional hook: models without a file have nothing to load
        """Load the model now (a missing install must fail before any video)."""


class _DlibShape(LandmarkModel):
    filename: ClassVar[str]

    def load(self) -> None:
        _predictor(self.filename)

    def predict(self, frame_rgb: np.ndarray, box: Box) -> np.ndarray:
        import dlib

        rect = dlib.rectangle(int(round(box.x0)), int(round(box.y0)), int(round(box.x1)) - 1, int(round(box.y1)) - 1)
        shape = _predictor(self.filename)(np.ascontiguousarray(frame_rgb), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _eyes_in_image_order(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (a, b) if a[0] <= b[0] else (b, a)


class Dlib5Landmarks(_DlibShape):
    """dlib's 5-point model (public domain)."""

    name = "dlib5"
    num_points = 5
    filename = "shape_predictor_5_face_landmarks.dat"

    def anchors(self, points: np.ndarray) -> np.ndarray:
        left, right = _eyes_in_image_order(points[0:2].mean(axis=0), points[2:4].mean(axis=0))
        return np.stack([left, right, points[4]]).astype(np.float32)


class Dlib68Landmarks(_DlibShape):
    """dlib's 68-point model (iBUG 300-W: non-commercial use only)."""

    name = "dlib68"
    num_points = 68
    filename = "shape_predictor_68_face_landmarks.dat"

    def anchors(self, points: np.ndarray) -> np.ndarray:
        left, right = _eyes_in_image_order(points[36:42].mean(axis=0), points[42:48].mean(axis=0))
        mouth_l, mouth_r = _eyes_in_image_order(points[48], points[54])
        return np.stack([left, right, points[30], mouth_l, mouth_r]).astype(np.float32)


#: Landmark models by name (``faces.landmarks``).
LANDMARKERS: Registry[Any] = Registry(
    "landmark model",
    {"dlib5": "src.preprocessing.landmarks:Dlib5Landmarks", "dlib68": "src.preprocessing.landmarks:Dlib68Landmarks"},
)


def create_landmarker(name: str) -> LandmarkModel:
    """Build a landmark model by registry name.

    Raises:
        ConfigError: Unknown name.
    """
    return LANDMARKERS.get(name)()
