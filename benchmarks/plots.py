"""Plots of ``benchmarks/run.py`` results (matplotlib, Agg backend: no display needed).

Each function takes the result rows and an output directory, draws one PNG and
returns its path; :func:`draw_all` draws every one. Bars are coloured by kind:
this project, typical research code, physical reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.measure import MEMCPY_REFERENCE, Row  # noqa: E402

__all__ = ["PLOTS", "draw_all", "plot_bytes", "plot_dataloader", "plot_preprocess", "plot_random_read", "plot_throughput"]

_KIND_COLORS = {"project": "#1f77b4", "baseline": "#ff7f0e", "reference": "#7f7f7f"}
_KIND_LABELS = {"project": "this project", "baseline": "typical research code", "reference": "physical reference"}
_DPI = 110


class _Table:
    def __init__(self, rows: Sequence[Row]) -> None:
        self.values = {(r.contender, r.metric): r.value for r in rows}
        self.contenders = list(dict.fromkeys(r.contender for r in rows))

    def get(self, contender: str, metric: str) -> float | None:
        value = self.values.get((contender, metric))
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    def having(self, metric: str, names: Sequence[str] | None = None) -> list[str]:
        return [c for c in (names or self.contenders) if self.get(c, metric) is not None]


def _legend(ax: plt.Axes, kinds: Mapping[str, str], names: Sequence[str], hatches: Mapping[str, str] | None = None, **extra: object) -> None:
    """One legend: a colour per kind present, a white hatched patch per series, then any labelled lines."""
    present = list(dict.fromkeys(kinds.get(n, "reference") for n in names))
    handles: list = [plt.Rectangle((0, 0), 1, 1, color=_KIND_COLORS[k]) for k in present]
    labels = [_KIND_LABELS[k] for k in present]
    for label, hatch in (hatches or {}).items():
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch=hatch))
        labels.append(label)
    for line in ax.get_lines():
        if not line.get_label().startswith("_"):
            handles.append(line)
            labels.append(line.get_label())
    ax.legend(handles, labels, fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} | dict(extra)))


def _finish(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def _colors(names: Sequence[str], kinds: Mapping[str, str]) -> list[str]:
    return [_KIND_COLORS[kinds.get(n, "reference")] for n in names]


def _no_data(ax: plt.Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_random_read(rows: Sequence[Row], kinds: Mapping[str, str], out: Path) -> Path:
    """Random single-clip read latency per contender: warm and cold p50 bars, p95 whiskers, log scale."""
    t = _Table(rows)
    names = t.having("random_read_p50_ms")
    fig, ax = plt.subplots(figsize=(12, 4.8))
    if not names:
        _no_data(ax, "random read")
        return _finish(fig, out / "random_read_latency.png")
    x = np.arange(len(names))
    width = 0.4
    for offset, prefix, hatch in ((-width / 2, "random_read", ""), (width / 2, "cold_read", "//")):
        p50 = [t.get(n, f"{prefix}_p50_ms") for n in names]
        p95 = [t.get(n, f"{prefix}_p95_ms") for n in names]
        xs = [xi + offset for xi, v in zip(x, p50) if v is not None]
        ys = [v for v in p50 if v is not None]
        errs = [max(h - v, 0.0) for v, h in zip(p50, p95) if v is not None and h is not None]
        colors = [c for c, v in zip(_colors(names, kinds), p50) if v is not None]
        if ys:
            ax.bar(xs, ys, width, color=colors, hatch=hatch, edgecolor="black", linewidth=0.4,
                   yerr=[np.zeros(len(errs)), errs] if len(errs) == len(ys) else None, capsize=2)
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("ms per clip (p50, whisker to p95)")
    ax.set_title("Random read of one 3x16x224x224 clip (decoded, lower is better)")
    _legend(ax, kinds, names, {"warm page cache": "", "cold (page cache dropped)": "//"})
    ax.grid(axis="y", which="both", alpha=0.3)
    return _finish(fig, out / "random_read_latency.png")


def plot_dataloader(rows: Sequence[Row], kinds: Mapping[str, str], out: Path) -> Path:
    """DataLoader clips/s with 0 and 2 workers per contender, the memcpy bound as a line."""
    t = _Table(rows)
    names = [n for n in t.contenders if n != MEMCPY_REFERENCE and (t.get(n, "dataloader_w0_clips_per_s") or t.get(n, "dataloader_w2_clips_per_s"))]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    if not names:
        _no_data(ax, "DataLoader throughput")
        return _finish(fig, out / "dataloader_throughput.png")
    x = np.arange(len(names))
    width = 0.4
    colors = _colors(names, kinds)
    for offset, variant, hatch in ((-width / 2, "w0", ""), (width / 2, "w2", "//")):
        ys = [t.get(n, f"dataloader_{variant}_clips_per_s") or 0.0 for n in names]
        ax.bar(x + offset, ys, width, color=colors, hatch=hatch, edgecolor="black", linewidth=0.4)
    bound = t.get(MEMCPY_REFERENCE, "dataloader_w0_clips_per_s")
    if bound:
        ax.axhline(bound, color="black", linestyle="--", linewidth=1, label=f"memcpy bound ({bound:.0f} clips/s, 1 thread)")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("clips/s (one epoch, median)")
    ax.set_title("DataLoader throughput, warm page cache (higher is better)")
    _legend(ax, kinds, names, {"num_workers=0": "", "num_workers=2": "//"})
    ax.grid(axis="y", which="both", alpha=0.3)
    return _finish(fig, out / "dataloader_throughput.png")


def plot_bytes(rows: Sequence[Row], kinds: Mapping[str, str], out: Path) -> Path:
    """Bytes per clip on disk per contender/codec, the raw clip size as a line, ratios annotated."""
    t = _Table(rows)
    names = [n for n in t.having("bytes_per_clip") if n != MEMCPY_REFERENCE]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    if not names:
        _no_data(ax, "size")
        return _finish(fig, out / "bytes_per_clip.png")
    sizes = [t.get(n, "bytes_per_clip") / 1e6 for n in names]
    bars = ax.bar(names, sizes, color=_colors(names, kinds), edgecolor="black", linewidth=0.4)
    raw = t.get(MEMCPY_REFERENCE, "bytes_per_clip")
    if raw:
        ax.axhline(raw / 1e6, color="black", linestyle="--", linewidth=1, label=f"raw uint8 clip ({raw / 1e6:.2f} MB)")
    for bar, n in zip(bars, names):
        ratio = t.get(n, "compression_ratio")
        psnr = t.get(n, "psnr_db")
        text = f"{ratio:.2f}x" if ratio else ""
        if psnr is not None and not math.isinf(psnr):
            text += f"\n{psnr:.1f} dB"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("MB per clip on disk")
    ax.set_title("Storage size per clip (lower is better; ratio = raw / stored, PSNR for lossy)")
    ax.tick_params(axis="x", rotation=35, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_ha("right")
    ax.set_ylim(0, max(sizes) * 1.18)
    _legend(ax, kinds, names)
    return _finish(fig, out / "bytes_per_clip.png")


def plot_throughput(rows: Sequence[Row], kinds: Mapping[str, str], out: Path) -> Path:
    """Write MB/s and single-thread sequential read clips/s per contender (log scale)."""
    t = _Table(rows)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
    for ax, metric, ylabel, title in (
        (axes[0], "write_mb_per_s", "MB/s of raw clip bytes (fsync included)", "Write (higher is better)"),
        (axes[1], "sequential_clips_per_s", "clips/s, one thread", "Sequential read, warm (higher is better)"),
    ):
        names = t.having(metric)
        if not names:
            _no_data(ax, metric)
            continue
        ax.bar(names, [t.get(n, metric) for n in names], color=_colors(names, kinds), edgecolor="black", linewidth=0.4)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        for label in ax.get_xticklabels():
            label.set_ha("right")
        ax.grid(axis="y", which="both", alpha=0.3)
    _legend(axes[1], kinds, t.having("write_mb_per_s"))
    return _finish(fig, out / "write_and_sequential.png")


def plot_preprocess(rows: Sequence[Row], out: Path) -> Path:
    """Preprocessing videos/s: this pipeline vs DeepfakeBench-style vs decode only."""
    t = _Table(rows)
    names = t.having("videos_per_s")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if not names:
        _no_data(ax, "preprocessing")
        return _finish(fig, out / "preprocessing.png")
    colors = {"preprocess_pipeline": _KIND_COLORS["project"], "preprocess_deepfakebench": _KIND_COLORS["baseline"]}
    values = [t.get(n, "videos_per_s") for n in names]
    labels = [n.removeprefix("preprocess_") for n in names]
    bars = ax.bar(labels, values, color=[colors.get(n, _KIND_COLORS["reference"]) for n in names], edgecolor="black", linewidth=0.4)
    for bar, v in zip(bars, values):
        ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("videos/s (one process, median)")
    ax.set_title("Preprocessing one video to a 16-frame face clip (higher is better)")
    ax.set_ylim(0, max(values) * 1.15)
    return _finish(fig, out / "preprocessing.png")


#: File name of every plot :func:`draw_all` writes.
PLOTS = ("random_read_latency.png", "dataloader_throughput.png", "bytes_per_clip.png", "write_and_sequential.png", "preprocessing.png")


def draw_all(rows: Sequence[Row], kinds: Mapping[str, str], out: Path) -> list[Path]:
    """Draw every plot into ``out``; return their paths (see :data:`PLOTS`)."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_random_read(rows, kinds, out),
        plot_dataloader(rows, kinds, out),
        plot_bytes(rows, kinds, out),
        plot_throughput(rows, kinds, out),
        plot_preprocess(rows, out),
    ]
