"""Bad input is a one-line error: every case once ended in a traceback (exit 4) or was silently accepted.

Each case goes through the real CLI, as a user would type it: exit 2, one line on stderr naming
the setting, no traceback, and nothing started (no broker, no worker) before the refusal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "out-under-proc": (["--out", "/proc/ttg-x"], "--out /proc/ttg-x"),
    "out-is-a-file": (["--out", "/etc/hostname"], "--out /etc/hostname"),
    "port-not-a-number": (["--broker-url", "redis://127.0.0.1:abc/0"], "--broker-url"),
    "bad-redis-option": (["--broker-url", "redis://127.0.0.1:6379/0?socket_timeout=x"], "socket_timeout"),
    "bad-amqp-option": (["--backend", "rabbitmq", "--broker-url", "amqp://u:secretpw@127.0.0.1:5672/%2F?heartbeat=x"], "heartbeat"),
    "axis-too-long": (["--grid", "a=0:1:1000000000000"], "grid axis 'a'"),
    "grid-too-big": (["--grid", "a=0:1:1000000", "--grid", "b=0:1:1000000", "--grid", "c=0:1:100"], "grid axes hold"),
    "builtin-algorithm": (["--algorithm", "os:system"], "os:system is a function of the system module posix"),
    "class-algorithm": (["--algorithm", "subprocess:Popen"], "subprocess:Popen is a class"),
    "system-function": (["--algorithm", "subprocess:getoutput"], "system module subprocess"),
    "run-id-escapes-out": (["--run-id", "../../x"], "run id"),
    "algorithm-import-crashes": (
        ["--algorithm", "algos_import_crash:never"],
        "importing algorithm 'algos_import_crash:never': the compute process killed by SIGSEGV",
    ),
}


@pytest.mark.parametrize("args, names", CASES.values(), ids=CASES.keys())
def test_bad_input_is_refused_with_one_line_naming_the_setting(args: list[str], names: str, tmp_path: Path) -> None:
    out = [] if "--out" in args else ["--out", str(tmp_path / "runs")]
    proc = subprocess.run([sys.executable, "-m", "ttg", "run", "--params", "1000", "--chunk", "100", *out, *args], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], proc.stderr
    assert "secretpw" not in proc.stderr, "the password of a refused URL is not echoed"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "nothing is written for a refused run"
