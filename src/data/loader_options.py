"""The options of :func:`~src.data.loaders.create_data_loader`, validated up front, and the store's normalisation.

:class:`LoaderOptions` is a frozen dataclass of every ``**options`` key with
its default; building one checks every value and names the bad value and the
valid ones. :data:`LOADER_OPTIONS` is the derived ``name -> default`` mapping
kept for compatibility.

:func:`store_normalization` reads the mean/std a store's preprocessing run
recorded (the YAML ``loader:`` section, kept in the store's metadata as
``meta["config"]["preprocessing"]["loader"]``). :func:`resolve_normalization`
decides what a loader uses, first match wins, per statistic:

1. the ``mean``/``std`` loader option;
2. a transform that set it explicitly (``LMDBDataTransform(mean=...)``);
3. the store's recorded ``loader.mean``/``loader.std``;
4. ImageNet's (:data:`~src.data.transforms.IMAGENET_MEAN` / ``IMAGENET_STD``).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from src.data.dataset import ON_ERROR_POLICIES
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, LMDBDataTransform, _check_stats
from src.errors import ConfigError

__all__ = [
    "BALANCE_BY",
    "LOADER_OPTIONS",
    "TRAIN_ONLY_OPTIONS",
    "WORKER_TYPES",
    "LoaderOptions",
    "resolve_normalization",
    "store_normalization",
]

logger = logging.getLogger(__name__)

WORKER_TYPES = ("auto", "thread", "process")

#: What ``balanced=True`` sampling evens out: labels, datasets, or labels within each dataset.
BALANCE_BY = ("label", "dataset", "dataset_label")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_bool(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False{' or None' if optional else ''}; got {value!r}")


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}{' or None' if optional else ''}; got {value!r}")


@dataclass(frozen=True)
class LoaderOptions:
    """Every option :func:`~src.data.loaders.create_data_loader` accepts through ``**options``.

    Attributes:
        seed: Base seed; epoch ``e`` uses ``seed + e``.
        drop_last: Drop the last incomplete batch (and the uneven tail between ranks).
        balanced: Draw with replacement so each label (see ``balance_by``) is equally likely.
        num_samples: Draws per epoch with ``balanced`` (default: the dataset size).
        balance_by: What ``balanced`` evens out: ``"label"``, ``"dataset"``,
            or ``"dataset_label"`` (each dataset, then each label within it).
        dataset_weights: ``{dataset name: weight}``: draw datasets in these
            proportions instead of uniformly (``balance_by`` dataset or dataset_label).
        keys: Restrict to these keys.
        labels: Keep these labels (through the index).
        categories: Keep these categories (through the index).
        methods: Keep these methods (through the index).
        exclude_methods: Drop these methods (through the index).
        on_error: ``"raise"`` or ``"skip"`` for corrupt samples.
        verify: Check record checksums (None: the store's setting).
        worker_type: ``"auto"``, ``"thread"`` or ``"process"``.
        persistent_workers: Keep worker processes between epochs.
        multiprocessing_context: Start method name or context for worker processes.
        prefetch: Batches read ahead (>= 1).
        pin_memory: Pinned staging buffers (None: True for CUDA).
        timeout: Seconds to wait for a worker's batch (0: forever).
        mean: Normalisation mean (None: see :func:`resolve_normalization`).
        std: Normalisation std (None: see :func:`resolve_normalization`).
        normalize: Convert clips to normalised float32 (None: the transform's, True).
        rank: This process's distributed rank (None: from ``torch.distributed``).
        world_size: Distributed world size (None: from ``torch.distributed``).
        storage_options: Extra arguments for ``open_storage``.

    Raises:
        ConfigError: A value of the wrong type or out of range; the message
            names it and what is allowed.
    """

    seed: int = 0
    drop_last: bool = False
    balanced: bool = False
    num_samples: int | None = None
    balance_by: str = "label"
    dataset_weights: Mapping[str, float] | None = None
    keys: Any = None
    labels: Any = None
    categories: Any = None
    methods: Any = None
    exclude_methods: Any = None
    on_error: str = "raise"
    verify: bool | None = None
    worker_type: str = "auto"
    persistent_workers: bool = False
    multiprocessing_context: Any = None
    prefetch: int = 2
    pin_memory: bool | None = None
    timeout: float = 0.0
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    normalize: bool | None = None
    rank: int | None = None
    world_size: int | None = None
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.worker_type not in WORKER_TYPES:
            raise ConfigError(f"invalid worker_type {self.worker_type!r}; must be one of {', '.join(WORKER_TYPES)}")
        if self.on_error not in ON_ERROR_POLICIES:
            raise ConfigError(f"invalid on_error {self.on_error!r}; must be one of {', '.join(ON_ERROR_POLICIES)}")
        _check_int("seed", self.seed, -(2**63))
        _check_int("prefetch", self.prefetch, 1)
        _check_int("num_samples", self.num_samples, 1, optional=True)
        _check_int("rank", self.rank, 0, optional=True)
        _check_int("world_size", self.world_size, 1, optional=True)
        for name in ("drop_last", "balanced", "persistent_workers"):
            _check_bool(name, getattr(self, name))
        for name in ("verify", "pin_memory", "normalize"):
            _check_bool(name, getattr(self, name), optional=True)
        ctx = self.multiprocessing_context
        methods = multiprocessing.get_all_start_methods()
        if isinstance(ctx, str) and ctx not in methods:
            raise ConfigError(f"invalid multiprocessing_context {ctx!r}; must be one of {', '.join(methods)}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, numbers.Real) or self.timeout < 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0; got {self.timeout!r}")
        if self.mean is not None or self.std is not None:
            _check_stats(IMAGENET_MEAN if self.mean is None else self.mean, IMAGENET_STD if self.std is None else self.std)
        if self.storage_options is not None and not isinstance(self.storage_options, Mapping):
            raise ConfigError(f"storage_options must be a mapping of open_storage arguments; got {self.storage_options!r}")
        if self.num_samples is not None and not self.balanced:
            raise ConfigError("num_samples applies to balanced=True sampling only")
        if self.balance_by not in BALANCE_BY:
            raise ConfigError(f"invalid balance_by {self.balance_by!r}; must be one of {', '.join(BALANCE_BY)}")
        if self.balance_by != "label" and not self.balanced:
            raise ConfigError("balance_by applies to balanced=True sampling only")
        if self.dataset_weights is not None:
            weights = self.dataset_weights
            if not self.balanced or self.balance_by == "label":
                raise ConfigError("dataset_weights apply to balanced=True with balance_by='dataset' or 'dataset_label' only")
            if (
                not isinstance(weights, Mapping)
                or not weights
                or any(not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0 for k, v in weights.items())
                or not sum(weights.values()) > 0
            ):
                raise ConfigError(f"dataset_weights must map dataset names to numbers >= 0, not all zero; got {weights!r}")

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> LoaderOptions:
        """Build from ``**options``, rejecting unknown names.

        Raises:
            ConfigError: Unknown option names (the message lists the allowed
                ones) or invalid values.
        """
        unknown = sorted(set(options) - set(LOADER_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown loader option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(LOADER_OPTIONS)}")
        return cls(**options)


#: Every option ``create_data_loader`` accepts through ``**options``, with its default (derived from :class:`LoaderOptions`).
LOADER_OPTIONS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(LoaderOptions)}

#: Options that make no sense for a validation loader; ``create_train_val_loaders`` keeps them to training.
TRAIN_ONLY_OPTIONS = ("balanced", "num_samples", "balance_by", "dataset_weights", "drop_last")


def store_normalization(storage: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean/std recorded by the preprocessing run that wrote ``storage``.

    Preprocessing stores the whole config in the store's metadata
    (``meta["config"]["preprocessing"]["loader"]``, the YAML ``loader:`` section).

    Args:
        storage: An open store (anything with a ``meta`` mapping).

    Returns:
        ``(mean, std)`` as tuples, or None when the store records none (a store
        not written by preprocessing) or records something unusable (logged).
    """
    meta = getattr(storage, "meta", None)
    section: Any = meta
    for name in ("config", "preprocessing", "loader"):
        section = section.get(name) if isinstance(section, Mapping) else None
    if not isinstance(section, Mapping) or section.get("mean") is None or section.get("std") is None:
        return None
    try:
        return _check_stats(section["mean"], section["std"])
    except ConfigError as exc:
        logger.warning("%s: ignoring the recorded loader normalisation (%s)", getattr(storage, "path", "store"), exc)
        return None


def resolve_normalization(
    options: LoaderOptions, transform: LMDBDataTransform | None, storage: Any
) -> tuple[tuple[float, ...] | Sequence[float], tuple[float, ...] | Sequence[float]]:
    """The ``(mean, std)`` a loader normalises with; the order of precedence is in the module docstring.

    Args:
        options: The loader's options.
        transform: The per-sample transform, if any.
        storage: The open store (for its recorded normalisation), or a list of
            them (a multi-store loader: stores that record a statistic must
            agree on it unless the option or the transform sets it).

    Returns:
        ``(mean, std)``.

    Raises:
        ConfigError: Several stores record different values of a statistic
            that neither the options nor the transform set.
    """
    stores = list(storage) if isinstance(storage, (list, tuple)) else [storage]
    recorded = [(s, store_normalization(s)) for s in stores]
    explicit = transform.explicit_stats if transform is not None else frozenset()
    chosen = []
    for i, (name, default) in enumerate((("mean", IMAGENET_MEAN), ("std", IMAGENET_STD))):
        value = getattr(options, name)
        if value is None and name in explicit:
            value = getattr(transform, name)
        if value is None:
            found = {tuple(r[i]): s for s, r in recorded if r is not None}
            if len(found) > 1:
                listed = "; ".join(f"{getattr(s, 'path', 'store')}: {list(v)}" for v, s in found.items())
                raise ConfigError(f"the stores record different loader {name} values ({listed}); pass {name}=... to the loader to choose one")
            if found:
                value = next(iter(found))
        chosen.append(default if value is None else value)
    return chosen[0], chosen[1]
