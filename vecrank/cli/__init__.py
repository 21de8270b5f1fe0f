"""The ``vecrank`` command: a root group that reads settings and connects only when a command asks.

Exit codes: 0 success, 1 a failure the message explains, 2 a usage error. An error prints one
line; with ``-v`` (any count) an unexpected one is logged with its traceback, and from ``-vv`` a
vecrank error's traceback (with what caused it) is logged too.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from vecrank import __version__
from vecrank.cli.apikey import apikey_command
from vecrank.cli.es import es_command
from vecrank.cli.experiment import experiment_command
from vecrank.cli.index import index_command
from vecrank.cli.ingest import ingest_command
from vecrank.cli.plugin import plugin_command
from vecrank.cli.rank import cf_command, evaluate_command, model_command, train_command
from vecrank.cli.recommend import recommend_command
from vecrank.cli.serve import serve_command
from vecrank.cli.signals import signals_command
from vecrank.cli.users import users_command
from vecrank.errors import VecrankError
from vecrank.localnode.errors import LocalNodeError

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger("vecrank")


class AppContext:
    """Built once per invocation; the settings and the client are made on first use."""

    def __init__(self, overrides: dict[str, Any], verbosity: int):
        self.overrides = overrides
        self.verbosity = verbosity
        self._settings: Settings | None = None
        self._client: Elasticsearch | None = None

    @property
    def settings(self):
        from vecrank.settings import Settings

        if self._settings is None:
            self._settings = Settings.load(self.overrides)
        return self._settings

    @property
    def client(self):
        from vecrank.client import make_client

        if self._client is None:
            self._client = make_client(self.settings)
        return self._client


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Aligned columns for people; ``--json`` is there for scripts."""
    if not rows:
        return
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def _setting_option(name: str, help_text: str, **kwargs):
    # Environment variables are read by Settings (which records their source), not by click.
    return click.option(
        f"--{name.replace('_', '-')}", name, default=None, allow_from_autoenv=False, help=help_text, **kwargs
    )


class VecrankGroup(click.Group):
    """Turns Elasticsearch client errors raised by any command into one-line vecrank errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, VecrankError, LocalNodeError):
            raise
        except Exception as exc:
            app = ctx.obj
            if isinstance(app, AppContext) and app._settings is not None:
                from vecrank.client import explain_error

                friendly = explain_error(exc, app._settings)
                if friendly is not None:
                    raise friendly from exc
            raise


@click.group(
    cls=VecrankGroup,
    context_settings={"auto_envvar_prefix": "VECRANK", "help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@_setting_option("es_url", "Elasticsearch URL [env VECRANK_ES_URL; default: the local node].")
@_setting_option("es_api_key", "API key (base64 id:key) [env VECRANK_ES_API_KEY].")
@_setting_option("es_user", "User for basic auth [env VECRANK_ES_USER].")
@_setting_option("es_password", "Password for basic auth; prefer the env variable [env VECRANK_ES_PASSWORD].")
@_setting_option("es_ca_certs", "CA file for HTTPS [env VECRANK_ES_CA_CERTS].", type=click.Path(dir_okay=False))
@_setting_option("index_prefix", "Prefix of vecrank's indices [env VECRANK_INDEX_PREFIX; default vecrank].")
@_setting_option("state_dir", "Local node state folder [env VECRANK_STATE_DIR].", type=click.Path(file_okay=False))
@_setting_option(
    "config",
    "TOML config file [env VECRANK_CONFIG; default ~/.config/vecrank/config.toml].",
    type=click.Path(dir_okay=False),
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    allow_from_autoenv=False,
    help="More logging and the traceback of an unexpected error; -vv: debug, and every error's traceback.",
)
@click.option("-q", "--quiet", is_flag=True, allow_from_autoenv=False, help="Only warnings and errors.")
@click.version_option(__version__, prog_name="vecrank")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, **overrides: Any) -> None:
    """vecrank: personalized recommendations for a search page on Elasticsearch.

    Settings come from these options, then VECRANK_* variables, then the config file, then the
    local node started by `vecrank es up`.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s", stream=sys.stderr
    )
    logging.getLogger("vecrank").setLevel(level)
    if verbose < 2:  # the client logs each request, and each retry with its traceback; our error says it once
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    ctx.obj = AppContext(overrides, verbose)


for _command in (
    cf_command,
    es_command,
    evaluate_command,
    index_command,
    ingest_command,
    model_command,
    plugin_command,
    recommend_command,
    signals_command,
    train_command,
    experiment_command,
    serve_command,
    users_command,
    apikey_command,
):
    cli.add_command(_command)


def verbosity(args: list[str]) -> int:
    """How many ``-v`` the root options of ``args`` hold (``-vvv``, ``-v -v``, ``--verbose``...),
    as click itself parses them; 0 when they do not parse."""
    try:
        ctx = cli.make_context("vecrank", list(args), resilient_parsing=True)
    except Exception:
        return 0
    return int(ctx.params.get("verbose") or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point: map errors to one line on stderr and an exit code (tracebacks under ``-v``)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = cli.main(args=args, prog_name="vecrank", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except LocalNodeError as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.log_tail:
            click.echo(f"--- last lines of the Elasticsearch log ---\n{exc.log_tail}", err=True)
        if verbosity(args) > 1:
            log.debug("the error's traceback:", exc_info=exc)
        return 1
    except VecrankError as exc:
        click.echo(f"error: {exc}", err=True)
        if verbosity(args) > 1:
            log.debug("the error's traceback:", exc_info=exc)
        return 1
    except Exception as exc:
        if verbosity(args) > 0:
            log.exception("unexpected error")
        else:
            click.echo(f"error: {type(exc).__name__}: {exc} (run with -v for the traceback)", err=True)
        return 1
