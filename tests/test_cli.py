"""The CLI without a cluster: help, exit codes, lazy imports, one-line errors."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

from clihelp import run_cli


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from vecrank.cli import main\n"
        "rc = main(['--help'])\n"
        "main(['es', '--help'])\n"
        "main(['apikey', 'create', '--help'])\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'xgboost', 'elasticsearch', 'fastapi') "
        "if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage: vecrank" in out and re.search(r"^  es +Install, start, stop and inspect", out, re.M)
    assert (
        re.search(r"^  apikey +API keys for `vecrank serve`", out, re.M) and "--scope [recommend|events|admin]" in out
    )
    assert out.strip().endswith("0 []")


def test_usage_errors_exit_2(capsys, tmp_path):
    result = run_cli(capsys, "no-such-command")
    assert result.code == 2 and "No such command" in result.err
    result = run_cli(capsys, "--state-dir", str(tmp_path), "es", "up", "--setting", "novalue")
    assert result.code == 2 and "'novalue' is not KEY=VALUE" in result.err


def test_up_on_a_taken_port_fails_with_one_clear_line(capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli(capsys, "--state-dir", str(tmp_path), "es", "up", "--port", str(port))
    assert result.code == 1
    assert result.err.strip() == f"error: port {port} on 127.0.0.1 is already in use; choose another with --port"


def test_up_with_too_much_heap_fails(capsys, tmp_path):
    result = run_cli(capsys, "--state-dir", str(tmp_path), "es", "up", "--port", "9277", "--heap", "4000g")
    assert result.code == 1 and "too little memory" in result.err


def test_status_of_an_unreachable_url(capsys, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli(
        capsys,
        "--state-dir",
        str(tmp_path),
        "--es-url",
        f"https://127.0.0.1:{port}",
        "--es-user",
        "u",
        "--es-password",
        "pw-not-shown",
        "es",
        "status",
    )
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines == [f"error: cannot reach https://127.0.0.1:{port}: Connection refused"]
    assert "pw-not-shown" not in result.err + result.out


def test_bad_setting_is_a_one_line_error(capsys, tmp_path):
    result = run_cli(capsys, "--state-dir", str(tmp_path), "--index-prefix", "BAD PREFIX", "es", "status")
    assert result.code == 1
    assert result.err.startswith("error: index_prefix from command line must be lowercase")


def test_logs_without_a_node(capsys, tmp_path):
    result = run_cli(capsys, "--state-dir", str(tmp_path), "es", "logs")
    assert result.code == 1 and "no local node under" in result.err


def test_install_reports_the_pinned_version(capsys):
    from vecrank.localnode import ES_VERSION, distribution

    if distribution.installed() is None:
        import pytest

        pytest.skip("Elasticsearch not downloaded here (scripts/bootstrap.sh does it)")
    result = run_cli(capsys, "es", "install", "--json")
    assert result.code == 0
    assert json.loads(result.out)["version"] == ES_VERSION


def test_verbose_counts_show_the_traceback(capsys, caplog, monkeypatch, tmp_path):
    """One line without -v; -v, -vv, -vvv (and -v -v) log the unexpected error's traceback; from
    -vv a vecrank error's traceback is logged too, after its one line."""
    import logging

    import vecrank.cli
    from vecrank.cli import verbosity
    from vecrank.errors import VecrankError

    assert [verbosity(a) for a in (["es", "status"], ["-vvv", "es", "status"], ["-v", "-v", "x"], ["--verbose"])] == [
        0,
        3,
        2,
        1,
    ]

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(vecrank.cli.AppContext, "client", property(broken))
    base = ["--state-dir", str(tmp_path), "index", "list"]
    for flags, traceback in (([], False), (["-v"], True), (["-vv"], True), (["-vvv"], True)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            result = run_cli(capsys, *flags, *base)
        assert result.code == 1
        logged = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
        assert bool(logged) == traceback, (flags, [r.getMessage() for r in caplog.records])
        if not traceback:
            assert "RuntimeError: boom (run with -v for the traceback)" in result.err

    def failing(self):
        raise VecrankError("the cluster said no")

    monkeypatch.setattr(vecrank.cli.AppContext, "client", property(failing))
    for flags, traceback in (([], False), (["-v"], False), (["-vvv"], True)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            result = run_cli(capsys, *flags, *base)
        assert result.code == 1 and result.err.strip().splitlines()[-1] == "error: the cluster said no", result.err
        assert any(r.exc_info for r in caplog.records) == traceback, flags
