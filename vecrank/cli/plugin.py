"""``vecrank plugin``: build the Elasticsearch rescorer plugin, install it into the local node, check it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vecrank.cli._common import app, echo_json, echo_table, json_option
from vecrank.client import explain_error
from vecrank.localnode import plugin


def _state_dir() -> Path:
    return Path(app().settings.state_dir)


@click.group("plugin", short_help="Build, install and check the Elasticsearch rescorer plugin.")
def plugin_command() -> None:
    """The vecrank rescorer plugin: ranks the top hits of a search with a registered XGBoost model
    inside Elasticsearch ("rescore": {"vecrank": {"model": ...}}).

    `build` compiles it with Maven for the local node's Elasticsearch version (or --es-version);
    `install` puts it into a plugin-enabled copy of the local node's distribution and restarts the
    node if it runs; `status` says what is built, installed and loaded. For a cluster vecrank did
    not start, install the zip from `build` with that cluster's `bin/elasticsearch-plugin install`.
    """


@plugin_command.command("build", short_help="Compile and package the plugin with Maven.")
@click.option(
    "--es-version",
    default=None,
    metavar="9.X.Y",
    help="Elasticsearch version to build for [default: the local node's, VECRANK_ES_VERSION or the pinned one].",
)
@click.option("--skip-tests", is_flag=True, help="Do not run the Java unit tests.")
@click.option("--jdk", default=None, help="JDK (21+) home for Maven [default: found like the node's].")
@json_option
def build_command(es_version: str | None, skip_tests: bool, jdk: str | None, as_json: bool) -> None:
    """Run `mvn package` in plugin/ (needs Maven and a JDK 21+); the zip lands in plugin/target/releases."""

    built = plugin.build(es_version, skip_tests=skip_tests, jdk=jdk)
    if as_json:
        echo_json(built.to_dict())
    else:
        click.echo(f"Built {built.path} (plugin {built.version} for Elasticsearch {built.es_version}).")


@plugin_command.command("install", short_help="Install the plugin into the local node (restarts it if running).")
@click.option(
    "--zip",
    "zip_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A plugin zip [default: the build for the node's version, rebuilt when older than the sources].",
)
@click.option(
    "--no-restart", is_flag=True, help="Leave a running node as it is; it loads the plugin at its next start."
)
@click.option("--no-build", is_flag=True, help="Fail instead of building when no up-to-date zip exists.")
@click.option(
    "--jdk", default=None, help="JDK (21+) home for Maven and the plugin tool [default: found like the node's]."
)
@json_option
def install_command(zip_path: Path | None, no_restart: bool, no_build: bool, jdk: str | None, as_json: bool) -> None:
    """Make a copy of the local node's Elasticsearch with the plugin installed, keyed by version and
    zip hash (the shared distribution is never modified), and start the local node from it."""

    result = plugin.install(zip_path, base=_state_dir(), restart=not no_restart, jdk=jdk, build_if_needed=not no_build)
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(
        f"Plugin {result.zip.version} for Elasticsearch {result.zip.es_version} installed in {result.es_home}"
        f"{'' if result.created else ' (already there)'}."
    )
    if result.restarted:
        click.echo("The local node was restarted and runs with the plugin.")
    elif result.running:
        click.echo("The local node already runs with it.")
    else:
        click.echo("The local node loads it at its next start (`vecrank es up`).")


@plugin_command.command("remove", short_help="Run the local node without the plugin again.")
@click.option("--no-restart", is_flag=True, help="Leave a running node as it is.")
def remove_command(no_restart: bool) -> None:
    """Forget the plugin home for this state folder; a running node restarts on the plain distribution."""
    if plugin.remove(base=_state_dir(), restart=not no_restart):
        click.echo("The local node no longer uses the plugin.")
    else:
        click.echo("No plugin was installed for this state folder.")


@plugin_command.command("attach", short_help="Let the plugin serve a registered model (adds plugin_features).")
@click.argument("model_id")
@click.option("--version", type=click.IntRange(1), default=None, help="Model version [default: the active one].")
@json_option
def attach_command(model_id: str, version: int | None, as_json: bool) -> None:
    """Derive where the plugin reads each feature of MODEL_ID, check every field against the items
    index mapping (and with the plugin itself when the cluster has it), and store the result in
    the model's registry document. Exit 1 with the reason when a feature maps to no usable field."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import attach_plugin_features

    ctx = app()
    result = attach_plugin_features(ctx.client, ctx.settings, model_id, version)
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"Model {result['model_id']} v{result['version']} can be ranked by the plugin "
        f"(\"rescore\": {{\"vecrank\": {{\"model\": \"{result['model_id']}\"}}}}):"
    )
    echo_table(
        [
            {
                "feature": f["name"],
                "source": f["source"],
                "field": f.get("field", ""),
                "transform / param": f.get("transform") or f.get("param", ""),
            }
            for f in result["plugin_features"]
        ]
    )


def _cluster_plugins(ctx) -> dict[str, Any]:
    """The plugin on each node of the configured cluster, or why that could not be read."""

    try:
        nodes = ctx.client.nodes.info(metric="plugins")["nodes"]
    except Exception as exc:  # the status still reports the local side
        friendly = explain_error(exc, ctx.settings)
        return {"error": str(friendly or exc)}
    out = {}
    for info in nodes.values():
        found = [p for p in info.get("plugins", []) if p.get("name") == plugin.PLUGIN_NAME]
        out[info.get("name", "?")] = {
            "es_version": info.get("version"),
            "plugin_version": found[0].get("version") if found else None,
        }
    return {"nodes": out, "loaded_everywhere": bool(out) and all(n["plugin_version"] for n in out.values())}


@plugin_command.command("status", short_help="What is built, installed and loaded.")
@click.option("--local-only", is_flag=True, help="Do not ask the configured cluster which plugins it runs.")
@json_option
def status_command(local_only: bool, as_json: bool) -> None:
    """Report the plugin sources, the build for the node's Elasticsearch version, the plugin home
    recorded for the local node, and which nodes of the configured cluster have loaded it.

    Exit status 1 when the configured cluster answers and does not have the plugin on every node.
    """

    ctx = app()
    info = plugin.local_status(_state_dir())
    if not local_only:
        info["cluster"] = {"url": ctx.settings.display_url, **_cluster_plugins(ctx)}
    if as_json:
        echo_json(info)
    else:
        built = info["built"]
        installed = info["installed"]
        local = info["local_node"]
        if built is None:
            build = "none; run `vecrank plugin build`"
        else:
            stale = " (stale: sources changed since)" if built["stale"] else ""
            other = "" if built["installed"] else " (not the installed build: `vecrank plugin install`)"
            build = f"{built['path']} for {built['es_version']}{stale}{other}"
        if installed is None:
            installed_text = "no"
        else:
            versions = f"plugin {installed['plugin_version']}, Elasticsearch {installed['es_version']}"
            installed_text = f"{installed['es_home']} ({versions})"
        if local is None:
            local_text = "not set up"
        else:
            running = "running" if local["running"] else "stopped"
            local_text = f"{running}, {'with' if local['with_plugin'] else 'without'} the plugin"
        rows = [
            {
                "what": "sources",
                "value": f"{info['source']} (plugin {info['source_version']})"
                if info["source"]
                else "none (not a checkout)",
            },
            {"what": "build", "value": build},
            {"what": "installed for local node", "value": installed_text},
            {"what": "local node", "value": local_text},
        ]
        cluster = info.get("cluster")
        if cluster is not None:
            if "error" in cluster:
                value = f"unreachable: {cluster['error']}"
            else:
                value = ", ".join(
                    f"{name}: {n['plugin_version'] or 'missing'} (Elasticsearch {n['es_version']})"
                    for name, n in cluster["nodes"].items()
                )
            rows.append({"what": f"cluster {cluster['url']}", "value": value})
        echo_table(rows)
    cluster = info.get("cluster")
    if cluster is not None and "error" not in cluster and not cluster["loaded_everywhere"]:
        raise click.exceptions.Exit(1)
