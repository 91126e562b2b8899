"""Torch-side transforms: stored sample -> tensors, and the batch's last step onto the device.

Two stages, split on purpose:

* :class:`LMDBDataTransform` (``__call__``) runs per sample, possibly inside a
  DataLoader worker process. It turns a stored sample into tensors and never
  touches an accelerator: clips stay ``uint8`` ``(C, T, H, W)``, 4x smaller than
  float32 on their way between processes.
* :class:`BatchFinisher` (and :meth:`LMDBDataTransform.finish`) runs once per
  batch in the main process: it moves the batch to the target device
  (``non_blocking`` from pinned memory on CUDA), converts ``uint8`` clips to
  float32 on the device and normalises them there.

Clip layout and torchvision: a clip is ``(C, T, H, W)``. torchvision's v1 image
transforms read a tensor as ``(..., channels, H, W)``, so on a clip they see ``C``
images of ``T`` "channels" each. Geometric transforms (flips, rotations, crops,
resizes, affine) therefore apply the *same* transformation to every frame and
channel, which is what a video needs, and work on ``uint8`` and float clips
alike. Colour transforms (``ColorJitter``, ``Grayscale``, ``Normalize``) need
real channels: wrap them in :class:`FrameTransform`, which shows them the clip as
``(T, C, H, W)`` frames.

Value scale: ``uint8`` clips are taken as 0..255, floating clips as 0..1 (the
torchvision convention); normalisation is ``(x - mean) / std`` on the 0..1 scale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from src.data.memory import RecyclingAllocator, alloc_cpu
from src.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchFinisher",
    "FrameTransform",
    "LMDBDataTransform",
    "RecyclingAllocator",
    "alloc_cpu",
    "normalize_clips",
    "resolve_device",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resolve_device(target_device: str | torch.device | None) -> torch.device:
    """Parse and check a target device without initialising CUDA.

    Args:
        target_device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
            :class:`torch.device`; ``None`` means ``"cpu"``.

    Returns:
        The device.

    Raises:
        ConfigError: Unparseable device, or an accelerator that is not
            available on this machine (e.g. ``"cuda"`` without a GPU).
    """
    if target_device is None:
        return torch.device("cpu")
    try:
        device = torch.device(target_device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid target_device {target_device!r} ({exc}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"target_device {str(target_device)!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use target_device='cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"target_device {str(target_device)!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"target_device {str(target_device)!r} was requested but MPS is not available; use target_device='cpu'")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported target_device {str(target_device)!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


def _check_stats(mean: float | Sequence[float], std: float | Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    def as_tuple(name: str, value: float | Sequence[float]) -> tuple[float, ...]:
        try:
            values = (float(value),) if np.isscalar(value) else tuple(float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number or a sequence of numbers (one per channel); got {value!r}") from None
        if not values:
            raise ConfigError(f"{name} must not be empty")
        return values

    mean_t, std_t = as_tuple("mean", mean), as_tuple("std", std)
    if any(s <= 0 for s in std_t):
        raise ConfigError(f"std values must be positive; got {std_t}")
    if len(mean_t) != len(std_t) and 1 not in (len(mean_t), len(std_t)):
        raise ConfigError(f"mean has {len(mean_t)} values but std has {len(std_t)}")
    return mean_t, std_t


class _Affine:
    """Per-channel ``x * scale + shift`` turning clips into normalised float32.

    With a zero mean (``loader: {mean: [0, 0, 0], std: [1, 1, 1]}`` means "just
    scale to 0..1") the result is the correctly rounded ``x / (255 * std)``, so
    ``std`` 1 gives exactly ``uint8 / 255``: on the CPU the scale is kept in
    float64 (one multiply rounded once to float32; for integers 0..255 that
    equals the float32 division), on accelerators the clips are divided. Any
    other mean takes the float32 multiply-add (within an ulp or two).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = _check_stats(mean, std)
        self.exact = all(m == 0.0 for m in self.mean)
        self._device_cache: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        mean = np.broadcast_to(np.asarray(self.mean, dtype=np.float64), (channels,)) if len(self.mean) in (1, channels) else None
        std = np.broadcast_to(np.asarray(self.std, dtype=np.float64), (channels,)) if len(self.std) in (1, channels) else None
        if mean is None or std is None:
            raise ConfigError(f"mean/std have {len(self.mean)}/{len(self.std)} values but the clips have {channels} channel(s)")
        return mean, std

    def coefficients(self, channels: int, integer: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, shift)`` arrays of length ``channels`` (float32; the scale float64 with a zero mean)."""
        mean, std = self._stats(channels)
        unit = 255.0 if integer else 1.0
        scale = 1.0 / (unit * std)
        return scale if self.exact else scale.astype(np.float32), (-mean / std).astype(np.float32)

    def on_device(self, channels: int, integer: bool, device: torch.device, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 ``(scale, shift)`` on ``device``, shaped to broadcast over ``ndim``-d clips;
        with a zero mean ``(divisor, shift)`` instead (see the class docstring)."""
        key = (str(device), channels, int(integer) + 2 * ndim)
        cached = self._device_cache.get(key)
        if cached is None:
            mean, std = self._stats(channels)
            unit = 255.0 if integer else 1.0
            first = unit * std if self.exact else 1.0 / (unit * std)
            view = (channels,) + (1,) * (ndim - 1)
            cached = tuple(torch.from_numpy(np.asarray(a, dtype=np.float32)).view(view).to(device) for a in (first, -mean / std))  # type: ignore[assignment]
            self._device_cache[key] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "exact": self.exact, "_device_cache": {}}


def convert_clip_into(out: np.ndarray, clip: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
    """Write ``clip * scale[c] + shift[c]`` into float32 ``out``, frame by frame.

    Working one (channel, frame) plane at a time keeps the second pass in cache;
    numpy releases the GIL, so reader threads convert in parallel.

    Args:
        out: float32 destination shaped like ``clip`` (C, ...).
        clip: Source clip (C, ...), any numeric dtype.
        scale: Per-channel scale.
        shift: Per-channel shift.
    """
    if clip.ndim >= 3:
        for c in range(clip.shape[0]):
            s, h = scale[c], shift[c]
            for t in range(clip.shape[1]):
                plane = out[c, t]
                np.multiply(clip[c, t], s, out=plane, casting="unsafe")
                np.add(plane, h, out=plane)
    else:
        for c in range(clip.shape[0]):
            np.multiply(clip[c], scale[c], out=out[c], casting="unsafe")
            np.add(out[c], shift[c], out=out[c])


def normalize_clips(data: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, *, channel_dim: int = -4) -> torch.Tensor:
    """Return float32 ``(x - mean) / std`` of clips, on their own device.

    Args:
        data: ``uint8`` (0..255) or floating (0..1) clips, ``(B, C, T, H, W)`` or ``(C, T, H, W)``.
        mean: Per-channel mean on the 0..1 scale.
        std: Per-channel standard deviation on the 0..1 scale.
        channel_dim: Which dimension holds the channels (default -4).

    Returns:
        A new float32 tensor of the same shape and device.
    """
    return _normalize(data, _Affine(mean, std), channel_dim)


def _normalize(data: torch.Tensor, affine: _Affine, channel_dim: int = -4, allocate: Callable[[Sequence[int], torch.dtype], torch.Tensor] = alloc_cpu) -> torch.Tensor:
    if data.ndim < -channel_dim:
        raise ConfigError(f"clips need at least {-channel_dim} dimensions (C, T, H, W); got shape {tuple(data.shape)}")
    integer = not torch.is_floating_point(data)
    channels = data.shape[channel_dim]
    if data.device.type == "cpu":
        scale, shift = affine.coefficients(channels, integer)
        out = allocate(data.shape, torch.float32)
        src = data.detach().contiguous().numpy()
        dst = out.numpy()
        c_axis = data.ndim + channel_dim
        lead = int(np.prod(src.shape[:c_axis], dtype=np.int64))
        src = src.reshape((lead,) + src.shape[c_axis:])
        dst = dst.reshape(src.shape)
        for i in range(lead):
            convert_clip_into(dst[i], src[i], scale, shift)
        return out
    first_t, shift_t = affine.on_device(channels, integer, data.device, -channel_dim)
    if affine.exact:
        return data.to(torch.float32, copy=True).div_(first_t)
    return torch.addcmul(shift_t, data.to(torch.float32), first_t)


class BatchFinisher:
    """The batch's last step, in the main process: onto the device, then float + normalise.

    Args:
        device: Target device (already checked, see :func:`resolve_device`).
        mean: Per-channel mean (0..1 scale).
        std: Per-channel std (0..1 scale).
        normalize: Convert clips to normalised float32; False leaves them as they
            come (``uint8`` unless a transform made them float).
    """

    def __init__(self, device: torch.device, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, normalize: bool = True) -> None:
        self.device = device
        self.affine = _Affine(mean, std)
        self.normalize = normalize
        self.allocate = RecyclingAllocator(4)

    def __call__(self, batch: dict[str, Any], *, normalized: bool = False) -> dict[str, Any]:
        """Move ``batch``'s tensors to the device and normalise its clips.

        Args:
            batch: A collated batch (``data``, ``label``, optional ``audio`` and ``audio_lengths``).
            normalized: The clips are already normalised float32 (the CPU fast path does it while reading).

        Returns:
            The same dict, updated.
        """
        non_blocking = self.device.type == "cuda"
        for name in ("data", "label", "audio", "audio_lengths"):
            value = batch.get(name)
            if isinstance(value, torch.Tensor) and value.device != self.device:
                batch[name] = value.to(self.device, non_blocking=non_blocking and value.is_pinned())
        if self.normalize and not normalized:
            batch["data"] = _normalize(batch["data"], self.affine, allocate=self.allocate)
        return batch


class LMDBDataTransform:
    """Turns a stored sample into tensors; subclass it for augmentation.

    ``__call__`` runs per sample (inside DataLoader workers when there are
    any) and only builds CPU tensors: ``data`` ``uint8`` ``(C, T, H, W)`` (or
    float32 on the 0..1 scale with ``dtype=torch.float32``), ``label`` int64,
    ``audio`` float32 1-D when stored, plus ``metadata`` and ``key``.
    The target device is only recorded: the loader moves each finished batch
    there in the main process (:meth:`finish`), so no worker ever touches CUDA.

    Args:
        target_device: Where batches end up (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        mean: Normalisation mean per channel (0..1 scale). Unset, it is
            ImageNet's, and a loader replaces it by the store's recorded
            ``loader.mean`` when the store has one.
        std: Normalisation std per channel (0..1 scale); unset, as ``mean``.
        normalize: Normalise clips in :meth:`finish` (False leaves ``uint8``).
        dtype: Clip dtype handed to augmentations: ``torch.uint8`` (default) or
            ``torch.float32`` (divided by 255).

    Raises:
        ConfigError: An unavailable device (``"cuda"`` without a GPU), bad
            mean/std or an unsupported dtype.

    Example:
        >>> class CustomTransform(LMDBDataTransform):
        ...     def __init__(self, target_device="cpu"):
        ...         super().__init__(target_device)
        ...         self.augmentation = transforms.RandomHorizontalFlip(p=0.5)
        ...     def __call__(self, sample):
        ...         sample = super().__call__(sample)
        ...         sample["data"] = self.augmentation(sample["data"])
        ...         return sample
    """

    def __init__(
        self,
        target_device: str | torch.device = "cpu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalize: bool = True,
        dtype: torch.dtype = torch.uint8,
    ) -> None:
        self.device = resolve_device(target_device)
        self.target_device = str(self.device)
        self._explicit: set[str] = set()
        self._mean, self._std = _check_stats(IMAGENET_MEAN if mean is None else mean, IMAGENET_STD if std is None else std)
        for name, value in (("mean", mean), ("std", std)):
            if value is not None:
                self._explicit.add(name)
        self.normalize = bool(normalize)
        if dtype not in (torch.uint8, torch.float32):
            raise ConfigError(f"dtype must be torch.uint8 or torch.float32; got {dtype!r}")
        self.dtype = dtype

    @property
    def mean(self) -> tuple[float, ...]:
        """Normalisation mean per channel (0..1 scale)."""
        return self._mean

    @mean.setter
    def mean(self, value: Sequence[float]) -> None:
        self._mean = _check_stats(value, (1.0,))[0]
        self._explicit.add("mean")

    @property
    def std(self) -> tuple[float, ...]:
        """Normalisation std per channel (0..1 scale)."""
        return self._std

    @std.setter
    def std(self, value: Sequence[float]) -> None:
        self._std = _check_stats((0.0,), value)[1]
        self._explicit.add("std")

    @property
    def explicit_stats(self) -> frozenset[str]:
        """Which of ``"mean"``/``"std"`` were set explicitly (constructor or assignment), not defaulted.

        A loader uses a store's recorded normalisation for the others.
        """
        return frozenset(getattr(self, "_explicit", ()))

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Convert one stored sample to CPU tensors.

        Args:
            sample: ``{"data": ndarray (C, T, H, W), "label": int, "metadata": dict, "audio"?: ndarray, "key"?: str}``.

        Returns:
            ``{"data", "label", "metadata", "key"}`` plus ``"audio"`` when stored.

        Raises:
            ValueError: ``data`` is not a 4-D clip.
        """
        data = sample["data"]
        key = sample.get("key")
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(np.require(data, requirements=("C", "W")))
        elif not isinstance(data, torch.Tensor):
            raise ValueError(f"sample {key!r}: 'data' must be an array or tensor; got {type(data).__name__}")
        if data.ndim != 4:
            raise ValueError(f"sample {key!r}: expected a clip shaped (C, T, H, W); got shape {tuple(data.shape)}")
        if self.dtype == torch.float32 and not torch.is_floating_point(data):
            data = data.to(torch.float32).div_(255.0)
        out: dict[str, Any] = {
            "data": data,
            "label": torch.tensor(int(sample["label"]), dtype=torch.int64),
            "metadata": dict(sample.get("metadata") or {}),
            "key": key,
        }
        audio = sample.get("audio")
        if audio is not None:
            audio = audio if isinstance(audio, torch.Tensor) else torch.from_numpy(np.require(audio, dtype=np.float32, requirements=("C", "W")))
            out["audio"] = audio.to(torch.float32).reshape(-1)
        return out

    def finisher(self, device: torch.device | None = None, **overrides: Any) -> BatchFinisher:
        """The :class:`BatchFinisher` matching this transform's device and normalisation."""
        return BatchFinisher(
            device or self.device,
            overrides.get("mean", self.mean),
            overrides.get("std", self.std),
            overrides.get("normalize", self.normalize),
        )

    def finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move a collated batch to the target device and normalise it (main process only)."""
        return self.finisher()(batch)


class FrameTransform:
    """Apply an image transform to a clip's frames, seen as ``(T, C, H, W)``.

    For torchvision transforms that need real colour channels (``ColorJitter``,
    ``Grayscale``, ``Normalize``): the clip is permuted to frames-first, the
    transform runs once over all frames (same random parameters for the whole
    clip), and the result is permuted back to ``(C, T, H, W)``.

    Args:
        transform: A callable on ``(..., C, H, W)`` tensors.
    """

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """Transform ``clip`` (C, T, H, W) frame-wise."""
        if clip.ndim != 4:
            raise ValueError(f"FrameTransform expects a (C, T, H, W) clip; got shape {tuple(clip.shape)}")
        return self.transform(clip.permute(1, 0, 2, 3)).permute(1, 0, 2, 3).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


class ClipAugmentation(LMDBDataTransform):
    """The base conversion followed by a callable on the clip tensor (C, T, H, W).

    What a loader uses when it is given a plain callable (e.g. a torchvision
    ``Compose``) instead of an :class:`LMDBDataTransform`.

    Args:
        augmentation: Callable on the clip tensor.
        target_device: See :class:`LMDBDataTransform`.
        **options: ``mean``, ``std``, ``normalize``, ``dtype``.
    """

    def __init__(self, augmentation: Callable[[torch.Tensor], torch.Tensor], target_device: str | torch.device = "cpu", **options: Any) -> None:
        super().__init__(target_device, **options)
        self.augmentation = augmentation

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Convert, then augment ``data``."""
        out = super().__call__(sample)
        out["data"] = self.augmentation(out["data"])
        return out
