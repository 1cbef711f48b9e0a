"""Config loading: defaults, TOML, FIELDSTATION_CLOUD_* variables, errors that point at the key."""

from __future__ import annotations

import dataclasses

import pytest

from cloud.config import ConfigError, StorageConfig, load_config, parse_listen


def test_defaults_need_no_file(tmp_path):
    config = load_config(env={}, data_dir=str(tmp_path))
    assert config.database_url() == f"sqlite:///{(tmp_path / 'cloud.sqlite3').resolve()}"
    assert config.storage.backend == "pack"
    assert config.storage_path() == tmp_path / "objects"


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[storage]\nbackend = "s3"\nbucket = "from-file"\n')
    config = load_config(path, env={"FIELDSTATION_CLOUD_STORAGE_BUCKET": "from-env"})
    assert config.storage.bucket == "from-env"


def test_wrong_type_names_key_and_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[limits]\nmax_items = "lots"\n')
    with pytest.raises(ConfigError, match=r"c.toml:2: \[limits\] max_items = 'lots': expected int"):
        load_config(path, env={})


def test_unknown_environment_variable_is_an_error():
    with pytest.raises(ConfigError, match="FIELDSTATION_CLOUD_LIMITS_NOPE"):
        load_config(env={"FIELDSTATION_CLOUD_LIMITS_NOPE": "1"})


def test_s3_without_bucket_is_refused():
    with pytest.raises(ConfigError, match="bucket"):
        load_config(env={"FIELDSTATION_CLOUD_STORAGE_BACKEND": "s3"})


@pytest.mark.parametrize(
    ("text", "expected"), [("127.0.0.1:8780", ("127.0.0.1", 8780)), ("[::1]:9", ("::1", 9))]
)
def test_listen_parsing(text, expected):
    assert parse_listen(text) == expected


def test_bad_listen_is_refused():
    with pytest.raises(ConfigError, match="listen"):
        load_config(env={}, listen="localhost")


def test_the_cloud_uses_the_station_loader(tmp_path):
    import agent.config

    assert issubclass(ConfigError, agent.config.ConfigError)
    path = tmp_path / "c.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:1"\n[storage]\nbackend = "s4"\nbuckt = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"FIELDSTATION_CLOUD_LIMITS_MAX_ITEMS": "0"})
    assert str(err.value).splitlines() == [
        f"{path}:4: [storage] backend: 's4' is not one of local, pack, s3, azure, gcs",
        f"{path}:5: unknown key [storage] buckt; did you mean `bucket`? [storage] takes: "
        + ", ".join(f.name for f in dataclasses.fields(StorageConfig)),
        "environment FIELDSTATION_CLOUD_LIMITS_MAX_ITEMS: [limits] max_items: 0 is below the "
        "minimum 1",
    ]


def test_rules_across_keys_run_in_the_same_pass(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[storage]\nbackend = "azure"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value).splitlines() == [
        f"{path}:1: [storage] container: required for backend 'azure'",
        f"{path}:1: [storage] connection_string: required for backend 'azure' (or account_url)",
    ]
