"""A terminal on a Docker exec with a TTY, read and written over the engine's hijacked socket.
Used by the Docker runner for containers and for a VM's serial console (docker_vm.py)."""

from __future__ import annotations

import socket
from typing import Any

import docker

from runners.base import RunnerError


def api_error_text(exc: Exception) -> str:
    """The first line of what the engine said, short enough for a learner's message."""
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if text else type(exc).__name__


class DockerTerminal:
    """A TTY exec attached over the hijacked API socket."""

    def __init__(self, api: Any, exec_id: str, sock: Any) -> None:
        self._api = api  # the engine's low-level APIClient
        self.exec_id = exec_id
        self._sock_wrapper = sock
        self._sock: socket.socket = getattr(sock, "_sock", sock)
        self._closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return self._sock.recv(max_bytes)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise RunnerError(f"the terminal is closed ({exc})") from exc

    def resize(self, cols: int, rows: int) -> None:
        try:
            self._api.exec_resize(self.exec_id, height=rows, width=cols)
        except docker.errors.APIError as exc:
            raise RunnerError(f"resize failed: {api_error_text(exc)}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
