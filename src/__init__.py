"""Data layer for audio-visual deepfake-detection research."""

__version__ = "0.1.0"
