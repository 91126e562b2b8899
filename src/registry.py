"""One small, generic name -> implementation registry, used by every extension point.

Each kind of plugin (storage backends, codecs, face detectors, frame selectors,
executors, dataset catalogs) has one :class:`Registry`. Built-in entries are
*lazy*: a ``"module:attribute"`` path imported on first :meth:`Registry.get`,
so :meth:`Registry.names` (used by config validation and CLI choices) never
imports a heavy backend such as h5py or dlib. Third-party code registers with
the decorator, before the name is used::

    from src.data.storage import BACKENDS

    @BACKENDS.register("zarr")
    class ZarrStorage(Storage): ...

    open_storage("x.zarr", "w", format="zarr")     # works

An unknown name raises :class:`~src.errors.ConfigError` listing the choices, in
one wording for every registry.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from src.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named set of implementations of one kind.

    Args:
        kind: What the entries are, for messages (``"storage format"``).
        lazy: Built-in entries as ``{name: "module:attribute"}``, imported on first use.
        on_register: Called as ``on_register(name, obj)`` when an entry is
            registered or first imported (e.g. to set ``cls.format = name``).
    """

    def __init__(self, kind: str, lazy: dict[str, str] | None = None, *, on_register: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._lazy: dict[str, str] = dict(lazy or {})
        self._loaded: dict[str, T] = {}
        self._order: list[str] = list(self._lazy)
        self._on_register = on_register
        self._lock = threading.Lock()

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        Args:
            name: The name users pass in config files and arguments.
            obj: The implementation (a class or a function).
            replace: Allow replacing an entry already registered under ``name``.

        Raises:
            ConfigError: ``name`` is empty, or taken by a different object and ``replace`` is False.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty name; got {name!r}")

        def add(target: T) -> T:
            with self._lock:
                current = self._loaded.get(name)
                taken = current is not None and current is not target
                # A built-in's own module registering itself on import is not a clash.
                lazy_path = self._lazy.get(name)
                if lazy_path is not None and current is None:
                    module, _, attr = lazy_path.partition(":")
                    taken = not (getattr(target, "__module__", None) == module and getattr(target, "__name__", attr) == attr)
                if taken and not replace:
                    raise ConfigError(f"{self.kind} {name!r} is already registered; pass replace=True to override it")
                self._loaded[name] = target
                if name not in self._order:
                    self._order.append(name)
            if self._on_register is not None:
                self._on_register(name, target)
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove a registered (non built-in) entry; for tests and plugin reloads.

        Raises:
            ConfigError: ``name`` is a built-in entry or unknown.
        """
        with self._lock:
            if name in self._lazy or name not in self._loaded:
                raise ConfigError(f"cannot unregister {self.kind} {name!r}: {'a built-in' if name in self._lazy else 'not registered'}")
            del self._loaded[name]
            self._order.remove(name)

    def get(self, name: str) -> T:
        """Return the implementation registered as ``name`` (importing a built-in on first use).

        Raises:
            ConfigError: Unknown name; the message lists every known one.
        """
        obj = self._loaded.get(name)
        if obj is not None:
            return obj
        path = self._lazy.get(name) if isinstance(name, str) else None
        if path is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; must be one of {', '.join(self.names()) or '(none registered)'}")
        module, _, attr = path.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        with self._lock:
            first = name not in self._loaded
            self._loaded.setdefault(name, obj)
        if first and self._on_register is not None:
            self._on_register(name, obj)
        return self._loaded[name]

    def names(self) -> tuple[str, ...]:
        """Every registered name, built-ins first, without importing anything."""
        return tuple(self._order)

    def loaded(self) -> dict[str, T]:
        """The entries imported or registered so far (nothing is imported)."""
        return dict(self._loaded)

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self.names())})"
