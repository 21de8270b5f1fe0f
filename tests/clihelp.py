"""Run the real `vecrank` entry point in-process and capture what a user would see."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys, *args: str) -> CliResult:
    from vecrank.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def connection_args(settings) -> list[str]:
    """Command-line options that point the CLI at the cluster ``settings`` describe."""
    args = ["--es-url", settings.es_url, "--state-dir", settings.state_dir]
    if settings.es_api_key:
        args += ["--es-api-key", settings.es_api_key]
    elif settings.es_user:
        args += ["--es-user", settings.es_user, "--es-password", settings.es_password or ""]
    if settings.es_ca_certs:
        args += ["--es-ca-certs", settings.es_ca_certs]
    return args
