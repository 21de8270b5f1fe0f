"""Settings: precedence of the layers, where each value came from, masking, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vecrank.errors import ConfigError
from vecrank.settings import Settings


@pytest.fixture
def local_state(tmp_path: Path) -> Path:
    """A state folder as `vecrank es up` leaves it, without starting anything."""
    es_dir = tmp_path / "state" / "es"
    es_dir.mkdir(parents=True)
    (es_dir / "elastic.password").write_text("local-secret\n")
    (es_dir / "ca.crt").write_text("not read by Settings\n")
    (es_dir / "node.json").write_text(
        json.dumps(
            {
                "url": "https://127.0.0.1:9333",
                "version": "9.5.2",
                "es_home": "/x",
                "java_home": "/y",
                "tls": True,
                "user": "elastic",
                "password_file": str(es_dir / "elastic.password"),
                "ca_certs": str(es_dir / "ca.crt"),
                "heap": "512m",
                "nodes": [],
            }
        )
    )
    return tmp_path / "state"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('es_url = "https://config.example:9200"\nindex_prefix = "fromconfig"\nes_user = "cfguser"\n')
    return path


def test_defaults_without_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    s = Settings.load(env={}, config_path=None, state_dir=tmp_path / "none")
    assert s.es_url == "https://127.0.0.1:9200"
    assert s.index_prefix == "vecrank"
    assert s.es_user is None and s.es_password is None
    assert s.sources["es_url"] == "default"


def test_local_node_state_supplies_url_password_and_ca(local_state):
    s = Settings.load(env={}, state_dir=local_state)
    assert s.es_url == "https://127.0.0.1:9333"
    assert (s.es_user, s.es_password) == ("elastic", "local-secret")
    assert s.es_ca_certs.endswith("ca.crt")
    assert s.sources["es_password"].startswith("local node ")


def test_precedence_cli_over_env_over_config_over_local(local_state, config_file):
    env = {"VECRANK_INDEX_PREFIX": "fromenv", "VECRANK_ES_URL": "https://env.example:9200"}
    s = Settings.load({"index_prefix": "fromcli"}, env=env, config_path=config_file, state_dir=local_state)
    assert s.index_prefix == "fromcli" and s.sources["index_prefix"] == "command line"
    assert s.es_url == "https://env.example:9200" and s.sources["es_url"] == "env VECRANK_ES_URL"
    assert s.es_user == "cfguser" and s.sources["es_user"] == f"config {config_file}"

    s = Settings.load(env={}, config_path=config_file, state_dir=local_state)
    assert s.es_url == "https://config.example:9200" and s.index_prefix == "fromconfig"


def test_local_credentials_never_go_to_another_cluster(local_state):
    s = Settings.load(env={"VECRANK_ES_URL": "https://elsewhere.example:9200"}, state_dir=local_state)
    assert s.es_password is None and s.es_user is None and s.es_ca_certs is None


def test_env_password_with_local_user(local_state):
    s = Settings.load(env={"VECRANK_ES_PASSWORD": "override"}, state_dir=local_state)
    assert (s.es_user, s.es_password) == ("elastic", "override")
    assert s.sources["es_password"] == "env VECRANK_ES_PASSWORD"


def test_api_key_takes_the_place_of_basic_auth(local_state):
    s = Settings.load(env={"VECRANK_ES_API_KEY": "abc=="}, state_dir=local_state)
    assert s.auth_method == "api key"
    assert s.es_password is None


def test_secrets_are_masked_in_describe(local_state):
    s = Settings.load(env={"VECRANK_ES_API_KEY": "topsecretkey"}, state_dir=local_state)
    rows = {r["setting"]: r for r in s.describe()}
    assert rows["es_api_key"]["value"] == "****"
    assert "topsecretkey" not in json.dumps(s.describe())


def test_userinfo_in_url_is_masked(tmp_path):
    s = Settings.load(env={"VECRANK_ES_URL": "https://bob:hunter2@db.example:9200"}, state_dir=tmp_path)
    assert s.display_url == "https://****@db.example:9200"
    assert "hunter2" not in json.dumps(s.describe())


def test_typed_values_from_env(tmp_path):
    s = Settings.load(env={"VECRANK_ES_VERIFY_CERTS": "false", "VECRANK_ES_REQUEST_TIMEOUT": "7.5"}, state_dir=tmp_path)
    assert s.es_verify_certs is False and s.es_request_timeout == 7.5
    with pytest.raises(ConfigError, match="es_verify_certs from env VECRANK_ES_VERIFY_CERTS"):
        Settings.load(env={"VECRANK_ES_VERIFY_CERTS": "maybe"}, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="es_request_timeout from env VECRANK_ES_REQUEST_TIMEOUT"):
        Settings.load(env={"VECRANK_ES_REQUEST_TIMEOUT": "soon"}, state_dir=tmp_path)


def test_config_file_errors_name_the_file(tmp_path):
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('es_urll = "x"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key\(s\) es_urll"):
        Settings.load(env={}, config_path=bad_key, state_dir=tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text('index_prefix = "a"\nes_url = \n')
    with pytest.raises(ConfigError, match=r"broken.toml: .*line 2"):
        Settings.load(env={}, config_path=broken, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(env={}, config_path=tmp_path / "missing.toml", state_dir=tmp_path)


def test_config_from_env_variable(tmp_path, config_file):
    s = Settings.load(env={"VECRANK_CONFIG": str(config_file)}, state_dir=tmp_path)
    assert s.index_prefix == "fromconfig"


@pytest.mark.parametrize("prefix", ["Upper", "has space", "", "-start", "a" * 65])
def test_bad_index_prefix(tmp_path, prefix):
    with pytest.raises(ConfigError, match="index_prefix from command line"):
        Settings.load({"index_prefix": prefix}, env={}, state_dir=tmp_path)


def test_bad_url_and_missing_ca_file(tmp_path):
    with pytest.raises(ConfigError, match="must look like https://host:9200"):
        Settings.load(env={"VECRANK_ES_URL": "localhost:9200"}, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="no file"):
        Settings.load(env={"VECRANK_ES_CA_CERTS": str(tmp_path / "nope.pem")}, state_dir=tmp_path)


def test_index_names_use_the_prefix(tmp_path):
    assert Settings.load({"index_prefix": "shop"}, env={}, state_dir=tmp_path).index("items") == "shop-items"
