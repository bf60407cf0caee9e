"""pillar.example is the configuration reference: it must load and cover every key."""

import pathlib

import yaml

from salt_engine_lib import config

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "pillar.example"


def test_pillar_example_is_valid_and_complete():
    block = yaml.safe_load(EXAMPLE.read_text())["relay"]
    assert set(block) == set(config.KEYS)
    loaded = config.load(pillar_block=block)
    assert loaded.include_tags == config.DEFAULT_INCLUDE_TAGS
    assert loaded.exclude_tags == config.DEFAULT_EXCLUDE_TAGS
    assert loaded.batch_size == config.RelayConfig.batch_size
