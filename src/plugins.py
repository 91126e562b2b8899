"""Loading third-party plugins for the command-line tools.

A plugin is any importable module that registers names in the registries
(``@register_backend``, ``CODECS.register``, ``DETECTORS.register``,
``EXECUTORS.register``, ``CATALOGS.register``, ...). Library users simply
import their module before calling the API; the CLIs import the modules named
in the environment variable ``DEEPFAKE_DATA_PLUGINS`` (comma-separated module
names) before parsing their arguments::

    DEEPFAKE_DATA_PLUGINS=mylab.zarr_store python preprocess.py --dataset fakeavceleb --format zarr
"""

from __future__ import annotations

import importlib
import logging
import os

from src.errors import ConfigError

__all__ = ["PLUGINS_ENV", "load_plugins"]

logger = logging.getLogger(__name__)

PLUGINS_ENV = "DEEPFAKE_DATA_PLUGINS"


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the plugin modules named in ``spec`` (default: ``$DEEPFAKE_DATA_PLUGINS``).

    Returns:
        The modules imported.

    Raises:
        ConfigError: A module cannot be imported.
    """
    spec = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_ENV}: cannot import plugin module {name!r}: {exc}") from None
        logger.debug("loaded plugin %s", name)
    return names
