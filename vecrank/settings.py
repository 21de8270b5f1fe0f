"""One settings object, read in layers, remembering where each value came from.

Precedence, highest first: command-line options, ``VECRANK_*`` environment variables, the config
file (``--config``, ``VECRANK_CONFIG`` or ``~/.config/vecrank/config.toml``), the local node's
state (URL, ``elastic`` password, CA), then defaults. The local node's credentials are used only
when the URL in force is the local node's, so they never travel to another cluster.

Example:
    >>> s = Settings.load(env={"VECRANK_INDEX_PREFIX": "shop"}, state_dir="/nonexistent")
    >>> s.index_prefix, s.sources["index_prefix"]
    ('shop', 'env VECRANK_INDEX_PREFIX')
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vecrank.errors import ConfigError
from vecrank.localnode import paths
from vecrank.localnode.cluster import DEFAULT_PORT, LocalCluster
from vecrank.localnode.errors import LocalNodeError

SECRETS = frozenset({"es_api_key", "es_password"})
_INDEX_PREFIX = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def _to_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not true/false")


@dataclass(frozen=True)
class Settings:
    """Where the cluster is, how to authenticate, and how vecrank names its indices."""

    es_url: str = f"https://127.0.0.1:{DEFAULT_PORT}"
    es_api_key: str | None = None
    es_user: str | None = None
    es_password: str | None = None
    es_ca_certs: str | None = None
    es_verify_certs: bool = True
    es_request_timeout: float = 30.0
    index_prefix: str = "vecrank"
    state_dir: str = field(default_factory=lambda: str(paths.state_dir()))
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def env_name(name: str) -> str:
        return "VECRANK_" + name.upper()

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "sources"]

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        config_path: str | os.PathLike | None = None,
        state_dir: str | os.PathLike | None = None,
    ) -> Settings:
        """Resolve every setting through the layers.

        Args:
            cli: values given on the command line (``None`` values are ignored).
            env: the environment to read ``VECRANK_*`` from (default ``os.environ``).
            config_path: a TOML file; default ``VECRANK_CONFIG`` or ``~/.config/vecrank/config.toml``.
            state_dir: the local node's state folder; default ``VECRANK_STATE_DIR`` or
                ``~/.local/state/vecrank``.
        """
        env = os.environ if env is None else env
        cli = {k: v for k, v in (cli or {}).items() if v is not None}
        names = cls.names()
        unknown = set(cli) - set(names) - {"config"}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")

        layers: list[tuple[str, dict[str, Any]]] = [("command line", dict(cli))]
        layers.append(("env", {n: env[cls.env_name(n)] for n in names if env.get(cls.env_name(n))}))
        layers.append(_config_layer(cli.get("config") or config_path or env.get("VECRANK_CONFIG"), names))

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for label, layer in layers:
            for name, value in layer.items():
                if name not in values:
                    values[name] = value
                    sources[name] = f"env {cls.env_name(name)}" if label == "env" else label
        state = Path(state_dir or values.get("state_dir") or paths.state_dir())
        values.setdefault("state_dir", str(state))
        sources.setdefault("state_dir", "default")
        _apply_local_node(values, sources, state)

        for f in fields(cls):
            if f.name != "sources" and f.name not in values:
                sources[f.name] = "default"
        try:
            if "es_verify_certs" in values:
                values["es_verify_certs"] = _to_bool(values["es_verify_certs"])
            if "es_request_timeout" in values:
                values["es_request_timeout"] = float(values["es_request_timeout"])
        except ValueError as exc:
            bad = "es_verify_certs" if "true/false" in str(exc) else "es_request_timeout"
            raise ConfigError(f"{bad} from {sources[bad]}: {exc}") from None
        settings = cls(**values, sources=sources)
        settings._validate()
        return settings

    def _validate(self) -> None:
        parsed = urllib.parse.urlsplit(self.es_url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ConfigError(
                f"es_url from {self.sources.get('es_url')} must look like https://host:9200, "
                f"not {self.display_url!r}"
            )
        if not _INDEX_PREFIX.fullmatch(self.index_prefix):
            raise ConfigError(
                f"index_prefix from {self.sources.get('index_prefix')} must be lowercase letters, "
                f"digits, '_', '.', '-' (at most 64), not {self.index_prefix!r}"
            )
        if self.es_ca_certs and not Path(self.es_ca_certs).is_file():
            raise ConfigError(f"es_ca_certs from {self.sources.get('es_ca_certs')}: no file {self.es_ca_certs}")
        if self.es_request_timeout <= 0:
            raise ConfigError(f"es_request_timeout from {self.sources.get('es_request_timeout')} must be > 0")

    @property
    def display_url(self) -> str:
        """The URL with any user:password@ part masked."""
        parsed = urllib.parse.urlsplit(self.es_url)
        if parsed.username or parsed.password:
            host = (parsed.hostname or "") + (f":{parsed.port}" if parsed.port else "")
            return urllib.parse.urlunsplit(parsed._replace(netloc=f"****@{host}"))
        return self.es_url

    @property
    def auth_method(self) -> str:
        if self.es_api_key:
            return "api key"
        if self.es_user:
            return f"basic ({self.es_user})"
        return "none"

    def index(self, name: str) -> str:
        """The full name of one of vecrank's indices or aliases: ``<prefix>-<name>``."""
        return f"{self.index_prefix}-{name}"

    def describe(self) -> list[dict[str, str]]:
        """Each setting with its value (secrets masked) and where it came from."""
        rows = []
        for name in self.names():
            value = getattr(self, name)
            if name in SECRETS and value:
                shown = "****"
            elif name == "es_url":
                shown = self.display_url
            else:
                shown = "" if value is None else str(value)
            rows.append({"setting": name, "value": shown, "source": self.sources.get(name, "default")})
        return rows


def _config_layer(path: str | os.PathLike | None, names: list[str]) -> tuple[str, dict[str, Any]]:
    explicit = path is not None
    config = Path(path) if path is not None else _default_config_path()
    if not config.is_file():
        if explicit:
            raise ConfigError(f"config file {config} does not exist")
        return ("config", {})
    try:
        data = tomllib.loads(config.read_text())
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line N, column M)"
        raise ConfigError(f"{config}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read: {exc}") from None
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(f"{config}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    return (f"config {config}", data)


def _default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "vecrank" / "config.toml"


def _apply_local_node(values: dict[str, Any], sources: dict[str, str], state: Path) -> None:
    try:
        cluster = LocalCluster.load(state)
    except LocalNodeError:
        return
    if cluster is None:
        return
    label = f"local node {paths.node_state_file(state)}"
    if "es_url" not in values:
        values["es_url"], sources["es_url"] = cluster.url, label
    if values["es_url"].rstrip("/") != cluster.url:
        return  # another cluster: the local node's password and CA must not go there
    if "es_api_key" not in values:
        values.setdefault("es_user", cluster.user)
        sources.setdefault("es_user", label)
        if "es_password" not in values:
            try:
                values["es_password"], sources["es_password"] = cluster.password, label
            except OSError:
                pass
    if cluster.ca_certs and "es_ca_certs" not in values:
        values["es_ca_certs"], sources["es_ca_certs"] = cluster.ca_certs, label
