"""Importing this module registers the dummy preprocessing plugins (for ``DEEPFAKE_DATA_PLUGINS``)."""

from tests.plugins.dummy_preprocessing import register

register()
