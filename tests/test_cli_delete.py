"""`vecrank ingest delete --ids -`: the ids come on stdin, so the confirmation is asked on the
terminal (/dev/tty); without a terminal the command refuses and says to pass --yes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import termios
import time

import pytest
from clihelp import connection_args

IDS = b"i0\ni1\n"


@pytest.fixture
def loaded(es, settings_for, tmp_path):
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.items import ItemSource, ingest_items

    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"i{n}", "title": f"Item {n}"}) + "\n" for n in range(3)))
    assert ingest_items(es, settings_for, path, ItemSource(template="{title}"), embedder=Embedder()).written == 3
    return settings_for


def _command(settings, *extra):
    return [
        sys.executable,
        "-m",
        "vecrank",
        *connection_args(settings),
        "--index-prefix",
        settings.index_prefix,
        "ingest",
        "delete",
        "--ids",
        "-",
        *extra,
    ]


def _count(es, settings):
    es.indices.refresh(index=settings.index("items"))
    return es.count(index=settings.index("items"))["count"]


def test_without_a_terminal_it_refuses_and_says_to_pass_yes(es, loaded):
    # A new session has no controlling terminal: /dev/tty cannot be opened, as under cron or CI.
    done = subprocess.run(_command(loaded), input=IDS, capture_output=True, start_new_session=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert b"--yes" in done.stderr and b"no terminal" in done.stderr
    assert _count(es, loaded) == 3
    done = subprocess.run(
        _command(loaded, "--yes"), input=IDS, capture_output=True, start_new_session=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert _count(es, loaded) == 1


def _on_a_terminal(command, answer: bytes):
    """Run ``command`` with the ids on a pipe as stdin and a pseudo-terminal as its controlling
    terminal; type ``answer`` there once the prompt shows. Returns (exit code, what the terminal showed)."""
    master, slave = os.openpty()

    def take_terminal():  # in the child, after setsid: the pty becomes /dev/tty
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=take_terminal,
        pass_fds=(slave,),
    )
    os.close(slave)
    child.stdin.write(IDS)
    child.stdin.close()
    shown = b""
    deadline = time.monotonic() + 120
    while b"[y/N]" not in shown:
        assert time.monotonic() < deadline and child.poll() is None, (shown, child.stderr.read())
        shown += os.read(master, 1024)
    os.write(master, answer)
    code = child.wait(120)
    os.close(master)
    return code, shown


def test_on_a_terminal_it_asks_there(es, loaded):
    code, shown = _on_a_terminal(_command(loaded), b"n\n")
    assert code == 1 and b"Delete 2 item(s)" in shown
    assert _count(es, loaded) == 3
    code, _ = _on_a_terminal(_command(loaded), b"y\n")
    assert code == 0
    assert _count(es, loaded) == 1
