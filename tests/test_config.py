"""The typed config: defaults, the shipped YAML, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.config import Config, config_from_dict, config_to_dict, load_config
from src.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_shipped_yaml_loads_and_matches_spec_keys():
    cfg = load_config(REPO / "configs" / "preprocessing.yaml")
    assert cfg.output.format == "lmdb"
    assert cfg.output.lmdb.map_size_gb == 10
    assert cfg.output.lmdb.max_readers == 1024
    assert cfg.output.lmdb.create_indexes is True
    assert cfg.output.lmdb.index_fields == ("label", "category", "method")


def test_spec_snippet_is_a_valid_config():
    cfg = config_from_dict(
        {"output": {"format": "lmdb", "lmdb": {"map_size_gb": 10, "max_readers": 1024, "create_indexes": True, "index_fields": ["label", "category", "method"]}}}
    )
    assert cfg.output.lmdb.index_fields == ("label", "category", "method")


def test_empty_config_gives_defaults():
    assert config_from_dict(None) == Config()
    assert config_from_dict({}).frames.num_frames == 16


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"output": {"fromat": "lmdb"}}, "unknown config key output.fromat"),
        ({"outputs": {}}, "unknown config key outputs"),
        ({"output": {"format": "parquet"}}, "output.format: invalid value 'parquet'; must be one of lmdb, hdf5, numpy, torch"),
        ({"output": {"lmdb": {"map_size_gb": "ten"}}}, "output.lmdb.map_size_gb: expected a number"),
        ({"output": {"lmdb": {"map_size_gb": -1}}}, "map_size_gb: must be a positive number"),
        ({"output": {"lmdb": {"create_indexes": "yes"}}}, "create_indexes: expected true or false"),
        ({"frames": {"num_frames": 2.5}}, "frames.num_frames: expected an integer"),
        ({"frames": {"sampling": "window", "num_frames": 16, "num_windows": 3}}, "divisible"),
        ({"splits": {"train": 0.5, "val": 0.1, "test": 0.1}}, "must be 1.0"),
        ({"faces": {"detector": "nosuch"}}, "faces.detector: invalid value 'nosuch'"),
        ({"faces": "big"}, "faces: expected a mapping"),
        ({"output": {"codec": "png"}}, "output.codec"),
    ],
)
def test_invalid_config_names_the_problem(data, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert needle in str(info.value)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listy)


def test_overrides_apply_on_top_and_none_is_ignored(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("output:\n  format: hdf5\n  codec: zstd\n")
    cfg = load_config(f, {"output": {"format": "numpy", "codec": None}})
    assert cfg.output.format == "numpy" and cfg.output.codec == "zstd"


def test_config_round_trips_through_dict():
    cfg = load_config(REPO / "configs" / "preprocessing.yaml")
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_config_choices_come_from_the_registries():
    from src.preprocessing.registries import DETECTORS, EXECUTORS, FRAME_SELECTORS

    registered = []
    try:
        for registry, section, key in ((DETECTORS, "faces", "detector"), (EXECUTORS, "processing", "executor"), (FRAME_SELECTORS, "frames", "sampling")):
            with pytest.raises(ConfigError, match=f"{section}.{key}: invalid value 'plugin_x'; must be one of"):
                config_from_dict({section: {key: "plugin_x"}})
            registry.register("plugin_x", type("PluginX", (), {}))
            registered.append(registry)
            assert getattr(getattr(config_from_dict({section: {key: "plugin_x"}}), section), key) == "plugin_x"
    finally:
        for registry in registered:
            registry.unregister("plugin_x")
