"""Run the CLI as a subprocess whose stdin and stdout are a pseudo-terminal of a given
size, as a user's terminal would be; stderr goes to a file so it stays apart."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class PtyResult:
    returncode: int
    output: str  # what the terminal received, \r\n line ends made \n
    stderr: str


def run_in_pty(
    args: list[str], *, env: dict[str, str], columns: int = 100, rows: int = 40,
    timeout: float = 60, cwd: str | None = None,
    poll: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> PtyResult:
    """``poll``, if given, is called with the process about 50 times a second while it
    runs (to act on it meanwhile, e.g. send it SIGINT as Ctrl-C would)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    full_env = {**env, "COLUMNS": str(columns), "LINES": str(rows), "TERM": env.get("TERM", "xterm")}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localstore", *args],
            stdin=slave, stdout=slave, stderr=err, env=full_env, cwd=cwd, close_fds=True,
        )
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                if poll is not None:
                    poll(proc)
                left = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([master], [], [], left if poll is None else min(left, 0.02))
                if not ready and poll is not None and left > 0:
                    continue
                if not ready:
                    proc.kill()
                    proc.wait()
                    raise TimeoutError(f"localstore {' '.join(args)} did not finish: {b''.join(chunks)[-500:]!r}")
                try:
                    data = os.read(master, 65536)
                except OSError as exc:  # EIO: every holder of the slave side closed it
                    if exc.errno != errno.EIO:
                        raise
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
        code = proc.wait(timeout=timeout)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    output = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return PtyResult(code, output, stderr)
