"""Runs ``adaptive-ttc serve`` as a real process on a free loopback port, for the server's integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

_READY_S = 120.0


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(backend: str, model: str, *extra: str, log: Path | None = None) -> Iterator[str]:
    """Start ``adaptive-ttc serve`` in front of ``backend``; yields its API root (``http://127.0.0.1:P/v1``)."""
    with serve_process(backend, model, *extra, log=log) as (url, _):
        yield url


@contextmanager
def serve_process(
    backend: str, model: str, *extra: str, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like ``serve``, and yields the process too (to read its CPU time)."""
    port = free_port()
    command = [sys.executable, "-m", "adaptive_ttc.cli", "serve", "--backend", backend, "--model", model]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra]
    sink = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=sink, stderr=sink, env=os.environ.copy())
    try:
        _wait_ready(process, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None:
            sink.close()  # type: ignore[union-attr]


def _wait_ready(process: subprocess.Popen[bytes], health: str) -> None:
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"adaptive-ttc serve exited with status {process.returncode} before it was ready")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"adaptive-ttc serve was not ready at {health} within {_READY_S:.0f} s")
