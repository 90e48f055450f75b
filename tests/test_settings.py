from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmsearch.errors import MMSearchError
from mmsearch.settings import SETTINGS, load_settings


def test_precedence_default_file_env_flag(tmp_path):
    config = tmp_path / "mmsearch.toml"
    config.write_text('model = "from-file"\nbatch_size = 8\ndevice = "cpu"\n')
    env = {"MMSEARCH_CONFIG": str(config), "MMSEARCH_MODEL": "from-env", "MMSEARCH_BATCH_SIZE": "16"}
    settings = load_settings({"model": "from-flag", "device": None}, env=env)
    assert settings.model == "from-flag" and settings.source("model") == "flag"
    assert settings.batch_size == 16 and settings.source("batch_size") == "env"
    assert settings.device == "cpu" and settings.source("device") == "config"
    assert settings.workers == 0 and not settings.explicit("workers")


def test_every_setting_has_help_and_an_env_name():
    for setting in SETTINGS:
        assert setting.help and setting.env == "MMSEARCH_" + setting.name.upper()


def test_database_url_defaults_into_the_data_dir(tmp_path):
    settings = load_settings({"data_dir": str(tmp_path)}, env={})
    assert settings.database_url == f"sqlite:///{tmp_path}/mmsearch.db"
    assert load_settings({"db_url": "postgresql://u@h/db"}, env={}).database_url == "postgresql://u@h/db"


@pytest.mark.parametrize("flags, env, fragment", [
    ({"batch_size": "0"}, {}, "batch_size"),
    ({}, {"MMSEARCH_WORKERS": "-1"}, "workers"),
    ({"nonsense": 1}, {}, "unknown setting"),
    ({}, {"MMSEARCH_CONFIG": "/no/such/file.toml"}, "cannot read config file"),
])
def test_invalid_values_are_errors(flags, env, fragment):
    with pytest.raises(MMSearchError, match=fragment):
        load_settings(flags, env=env)


def test_unknown_key_in_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("colour = 'blue'\n")
    with pytest.raises(MMSearchError, match="colour"):
        load_settings({}, env={}, config_file=config)


def test_the_readme_documents_every_setting_with_its_default():
    """The README's configuration table is the settings table: same names, defaults and help."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(MMSEARCH_[A-Z_]+)` \| (.*?) \|", readme, re.MULTILINE))
    for setting in SETTINGS:
        assert setting.env in rows, setting.env
        shown = "(empty)" if setting.default == "" else f"`{setting.default}`"
        assert rows[setting.env] == shown, (setting.env, rows[setting.env], shown)
        assert setting.help.split(".")[0] in readme, setting.env


@pytest.mark.parametrize("text", ['image = ["a photo of {}."]\naudio = ["the sound of {}."]',  # a TOML table
                                  '{image = ["a photo of {}."], audio = ["the sound of {}."]}',  # inline
                                  '{"image": ["a photo of {}."], "audio": ["the sound of {}."]}'])  # JSON
def test_tag_templates_from_the_environment_are_a_toml_table_or_json(text):
    templates = load_settings({}, env={"MMSEARCH_TAG_TEMPLATES": text}).tag_templates
    assert templates["image"] == ["a photo of {}."] and templates["audio"] == ["the sound of {}."]
    assert len(templates["text"]) > 1  # left out: the built-in ensemble


@pytest.mark.parametrize("text, fragment", [
    ("image = [", "neither a JSON object nor a TOML table"), ("{image: 1}", "neither a JSON object nor a TOML table"),
    ('image = "a photo of {}."', "lists of templates"), ('["a {}"]', "lists of templates"),
    ('colour = ["a {}"]', "lists of templates")])
def test_tag_templates_that_are_neither_are_one_clear_error(text, fragment):
    with pytest.raises(MMSearchError, match=f"^invalid tag_templates from env MMSEARCH_TAG_TEMPLATES: .*{fragment}") \
            as refused:
        load_settings({}, env={"MMSEARCH_TAG_TEMPLATES": text})
    assert "\n" not in str(refused.value)
