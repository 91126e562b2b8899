"""A face detector, an executor and a dataset catalog registered from outside src/ (plugin tests)."""

from __future__ import annotations

from pathlib import Path

from src.datasets.catalog import CATALOGS, Catalog
from src.datasets.fakeavceleb import read_catalog as read_fakeavceleb
from src.preprocessing.executors import SerialExecutor
from src.preprocessing.faces import DlibHogDetector
from src.preprocessing.registries import DETECTORS, EXECUTORS

__all__ = ["CountingDetector", "RecordingExecutor", "read_mini_catalog", "register", "unregister"]


class CountingDetector(DlibHogDetector):
    """dlib HOG that counts the frames it is asked about."""

    frames = 0

    def _detect(self, model, frame_rgb):
        type(self).frames += 1
        return super()._detect(model, frame_rgb)


class RecordingExecutor(SerialExecutor):
    """The serial executor, recording how many tasks it ran."""

    tasks = 0

    def map(self, tasks):
        for result in super().map(tasks):
            type(self).tasks += 1
            yield result


def read_mini_catalog(root: Path, label_policy: str = "multimodal") -> Catalog:
    """A FakeAVCeleb-layout tree published under another name (output folder ``MiniSet``)."""
    catalog = read_fakeavceleb(root, label_policy)
    return Catalog(name="MiniSet", records=catalog.records, problems=catalog.problems)


def register() -> None:
    """Register ``counting_hog``, ``recording`` and ``mini``."""
    DETECTORS.register("counting_hog", CountingDetector)
    EXECUTORS.register("recording", RecordingExecutor)
    CATALOGS.register("mini", read_mini_catalog)


def unregister() -> None:
    """Undo :func:`register`."""
    DETECTORS.unregister("counting_hog")
    EXECUTORS.unregister("recording")
    CATALOGS.unregister("mini")
