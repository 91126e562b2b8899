"""Output of ``benchmarks/run.py``: ``results.csv`` (every measurement) and ``results.md`` (for the README)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from benchmarks.measure import CSV_COLUMNS, MEMCPY_REFERENCE, PICKLE_REFERENCE, PREPROCESS_CONTENDERS, Row

__all__ = ["markdown", "write_csv"]


def write_csv(rows: Sequence[Row], out: Path | TextIO) -> None:
    """Write the rows with columns ``contender,metric,value,unit,cache,notes`` to a path or an open text stream."""
    if isinstance(out, Path):
        with open(out, "w", newline="") as fh:
            write_csv(rows, fh)
        return
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_csv())


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "lossless"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def _pair(a: float | None, b: float | None) -> str:
    return "n/a" if a is None and b is None else f"{_fmt(a)} / {_fmt(b)}"


def markdown(
    rows: Sequence[Row],
    *,
    kinds: Mapping[str, str],
    descriptions: Mapping[str, str],
    machine: Mapping[str, str],
    command: str,
    settings: Mapping[str, str],
    plots: Sequence[str],
) -> str:
    """The markdown report: setup, the storage and loader table, the ratio table, preprocessing, plots, notes.

    Args:
        rows: Every result row (storage, ratios, preprocessing).
        kinds: Storage contender name -> kind (``project``, ``baseline``, ``reference``).
        descriptions: Storage contender name -> one-paragraph description.
        machine: What :func:`~benchmarks.workload.machine_info` returns.
        command: The exact command line.
        settings: Sizes and methods of the run, as labelled strings.
        plots: Links of the plot images, as they should appear in the markdown.
    """
    v = {(r.contender, r.metric): r.value for r in rows}
    notes = {(r.contender, r.metric): r.notes for r in rows}
    storage = [c for c in dict.fromkeys(r.contender for r in rows) if c in kinds]
    out: list[str] = ["# Benchmarks: this project against what a researcher would pick", ""]
    out += ["Reproduce with:", "", "```", command, "```", ""]
    out += ["| machine | |", "|---|---|"] + [f"| {k} | {val} |" for k, val in machine.items()] + [""]
    out += ["| setting | |", "|---|---|"] + [f"| {k} | {val} |" for k, val in settings.items()] + [""]

    out += [
        "## Storage and loading",
        "",
        "Every contender stores the same clips in the same process; repeats are interleaved across contenders; "
        "throughputs are medians over repeats, latencies percentiles of the pooled single reads. "
        "A read returns the decoded uint8 clip (3, T, H, W) as a numpy array.",
        "",
        "| contender | kind | MB/clip | ratio | PSNR dB | write MB/s | random p50 / p95 ms (warm) | random p50 / p95 ms (cold) "
        "| sequential clips/s | DataLoader clips/s w0 / w2 | default loader clips/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in storage:
        size = v.get((c, "bytes_per_clip"))
        out.append(
            f"| {c} | {kinds[c]} | {_fmt(size / 1e6 if size else None)} | {_fmt(v.get((c, 'compression_ratio')))} "
            f"| {_fmt(v.get((c, 'psnr_db')))} | {_fmt(v.get((c, 'write_mb_per_s')))} "
            f"| {_pair(v.get((c, 'random_read_p50_ms')), v.get((c, 'random_read_p95_ms')))} "
            f"| {_pair(v.get((c, 'cold_read_p50_ms')), v.get((c, 'cold_read_p95_ms')))} "
            f"| {_fmt(v.get((c, 'sequential_clips_per_s')))} "
            f"| {_pair(v.get((c, 'dataloader_w0_clips_per_s')), v.get((c, 'dataloader_w2_clips_per_s')))} "
            f"| {_fmt(v.get((c, 'dataloader_default_clips_per_s')))} |"
        )
    cuda = [(c, v.get((c, "dataloader_cuda_clips_per_s"))) for c in storage if v.get((c, "dataloader_cuda_clips_per_s")) is not None]
    if cuda:
        out += ["", "Delivered to CUDA (this project's loader, defaults, `target_device='cuda'`): " + ", ".join(f"{c} {_fmt(x)} clips/s" for c, x in cuda) + "."]
    else:
        out += ["", "Delivery to CUDA: not measured (no CUDA device on this machine)."]

    out += [
        "",
        "## Ratios (these hold across machines better than the absolute numbers)",
        "",
        f"Each value divided by the same measurement of `{MEMCPY_REFERENCE}` (the memory-bandwidth bound; for DataLoaders, "
        f"one thread copying every clip into a batch buffer) and of `{PICKLE_REFERENCE}` (pickled uint8 dicts in LMDB). "
        "Latency ratios: lower is better; throughput ratios: higher is better.",
        "",
        "| contender | random p50 / memcpy | random p50 / pickle | cold p50 / pickle | sequential / memcpy | sequential / pickle "
        "| DataLoader w0 / memcpy | w0 / pickle | w2 / memcpy | w2 / pickle |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in storage:
        cells = [
            v.get((c, m))
            for m in (
                "random_read_p50_ms_vs_memcpy",
                "random_read_p50_ms_vs_pickle",
                "cold_read_p50_ms_vs_pickle",
                "sequential_clips_per_s_vs_memcpy",
                "sequential_clips_per_s_vs_pickle",
                "dataloader_w0_clips_per_s_vs_memcpy",
                "dataloader_w0_clips_per_s_vs_pickle",
                "dataloader_w2_clips_per_s_vs_memcpy",
                "dataloader_w2_clips_per_s_vs_pickle",
            )
        ]
        out.append(f"| {c} | " + " | ".join(_fmt(x) for x in cells) + " |")

    pre = [c for c in PREPROCESS_CONTENDERS if (c, "videos_per_s") in v]
    if pre:
        base = v.get(("preprocess_deepfakebench", "videos_per_s"))
        out += ["", "## Preprocessing", "", "| pipeline | videos/s | ms/video | speed vs DeepfakeBench-style |", "|---|--:|--:|--:|"]
        for c in pre:
            rate = v.get((c, "videos_per_s"))
            out.append(f"| {c} | {_fmt(rate)} | {_fmt(v.get((c, 'ms_per_video')))} | {_fmt(rate / base if rate and base else None)}x |")
        out += ["", notes.get((pre[0], "videos_per_s"), "").split("; ", 1)[-1] + "."]

    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]

    out += ["", "## Contenders", ""] + [f"* `{c}` ({kinds[c]}): {descriptions[c]}" for c in storage]
    out += [f"* `{c}`: {d}." for c, d in PREPROCESS_CONTENDERS.items() if c in pre]

    na = [(r.contender, r.metric, r.notes.split("n/a: ", 1)[1]) for r in rows if r.value is None and "n/a: " in r.notes and "_vs_" not in r.metric]
    errors = [(r.contender, r.notes.split("error: ", 1)[1]) for r in rows if "error: " in r.notes]
    if na or errors:
        out += ["", "## Not measured", ""]
        for c, msg in dict.fromkeys(errors):
            out.append(f"* `{c}`: **failed**: {msg}")
        grouped: dict[str, list[str]] = {}
        for c, metric, why in na:
            grouped.setdefault(why, []).append(f"{c}.{metric}")
        for why, where in grouped.items():
            out.append(f"* {why}: " + ", ".join(f"`{w}`" for w in where))
    return "\n".join(out) + "\n"
