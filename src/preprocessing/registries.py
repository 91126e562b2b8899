"""The preprocessing extension points: face detectors, frame selectors and executors.

Light on purpose (no cv2, dlib or av import), so ``src.config`` validates names
against them and CLIs list them without loading any model. Built-ins are lazy
``module:attribute`` paths; a plugin registers with the decorator::

    from src.preprocessing.registries import DETECTORS
    from src.preprocessing.faces import FaceDetector

    @DETECTORS.register("mine")          # faces.detector: mine
    class MyDetector(FaceDetector): ...
"""

from __future__ import annotations

from typing import Any

from src.registry import Registry

__all__ = ["DETECTORS", "EXECUTORS", "FRAME_SELECTORS"]


def _set_name(name: str, obj: Any) -> None:
    if isinstance(obj, type):
        obj.name = name


#: Face detector classes (:class:`~src.preprocessing.faces.FaceDetector` subclasses) by name.
DETECTORS: Registry[Any] = Registry(
    "face detector",
    {
        "dlib_hog": "src.preprocessing.faces:DlibHogDetector",
        "haar": "src.preprocessing.faces:HaarDetector",
        "mtcnn": "src.preprocessing.mtcnn:MTCNNDetector",
    },
    on_register=_set_name,
)

#: Frame selection functions ``fn(num_source_frames, num_frames, num_windows) -> indices`` by name.
FRAME_SELECTORS: Registry[Any] = Registry(
    "frame selection mode",
    {"uniform": "src.preprocessing.video:select_uniform", "window": "src.preprocessing.video:select_window"},
)

#: Executor classes (:class:`~src.preprocessing.executors.Executor` subclasses) by name.
EXECUTORS: Registry[Any] = Registry(
    "executor",
    {
        "process": "src.preprocessing.executors:ProcessExecutor",
        "serial": "src.preprocessing.executors:SerialExecutor",
        "ray": "src.preprocessing.ray_executor:RayExecutor",  # imports ray only when a run starts
    },
)
