"""A loopback HTTP proxy that breaks artifact downloads the ways field links do.

Modes: `pass`; `cut` (the first `cuts` responses are closed after `cut_after` body bytes, as a
dropped satellite link does); `no_range` (Range and If-Range are removed, so the server sends the
whole object: a proxy or server that ignores Range). Every request is sent with Connection: close.
"""

from __future__ import annotations

import socket
import threading


class FlakyProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.cut_after = 0
        self.cuts = 0
        self.ranges: list[str] = []  # Range headers seen on artifact requests
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.target_port)) as server:
            client.settimeout(10)
            server.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            artifact = b"/artifact" in lines[0]
            kept = [lines[0]]
            for line in lines[1:]:
                name = line.split(b":", 1)[0].strip().lower()
                if name == b"connection":
                    continue
                if artifact and name == b"range":
                    self.ranges.append(line.split(b":", 1)[1].strip().decode())
                if artifact and self.mode == "no_range" and name in (b"range", b"if-range"):
                    continue
                kept.append(line)
            kept.append(b"Connection: close")
            server.sendall(b"\r\n".join(kept) + b"\r\n\r\n" + rest)
            cut = artifact and self.mode == "cut" and self.cuts > 0
            if cut:
                self.cuts -= 1
            sent_body = 0
            in_body = False
            buf = b""
            while True:
                try:
                    data = server.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if cut:
                    if not in_body:
                        buf += data
                        if b"\r\n\r\n" not in buf:
                            continue
                        header, _, body = buf.partition(b"\r\n\r\n")
                        client.sendall(header + b"\r\n\r\n")
                        in_body, data = True, body
                    room = self.cut_after - sent_body
                    if len(data) >= room:
                        client.sendall(data[:room])
                        client.shutdown(socket.SHUT_RDWR)  # the link drops mid-body
                        return
                    sent_body += len(data)
                client.sendall(data)
