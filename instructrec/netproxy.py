"""A TCP proxy that can cut the line (a broker outage on demand) or slow it down.

The embedded broker advertises the proxy's address, so every client (metadata included)
goes through it. ``cut()`` closes every open connection and refuses new ones (clients see
a broker that went away), ``restore()`` accepts again. Used by the outage
tests (tests/integration/test_outage.py); a real outage loses nothing on the broker, and neither does this one
(Tansu keeps running behind it). ``delay_s`` holds back every chunk the broker sends for
that long: a broker slow to answer, as on a loaded machine (tests/integration/test_read_to_end.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class CuttableProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._closed = False
        self.cuts = 0
        self.delay_s = 0.0  # each chunk from the broker waits this long before it is passed on

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def reserve(self) -> int:
        """Pick the port now (the broker must advertise it before the proxy listens)."""
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = int(s.getsockname()[1])
        return self.port

    def start(self, listening: bool = True) -> CuttableProxy:
        self.reserve()
        if listening:
            self.restore()
        return self

    def restore(self) -> None:
        """Accept connections (again)."""
        with self._lock:
            if self._listener is not None or self._closed:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            self._listener = listener
        self._open.set()
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until ``restore()``."""
        self._open.clear()
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
            self.cuts += 1
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        for conn in conns:
            _close(conn)

    def close(self) -> None:
        self._closed = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while self._open.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if not self._open.is_set():
                    _close(client)
                    _close(server)
                    return
                self._conns.update((client, server))
            for a, b, slow in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(a, b, slow), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool = False) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if slow and self.delay_s > 0:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)

    def __enter__(self) -> CuttableProxy:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
