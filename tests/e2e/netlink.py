"""Links between the station (root namespace) and each cloud: a veth pair into a network
namespace of the cloud's own when namespaces can be made here, else plain loopback.

A cut on a namespaced link is the station side's interface going down (the route goes with it,
open connections hang until their timeouts); on loopback it is the link proxy refusing
connections, and the report says which of the two was used.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

# a private /30 per cloud, only ever inside our own namespaces and veth pairs; `i` is chosen so
# that two runs at once (two pids) never share a subnet
SUBNET = "10.250.{i}.{host}"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@dataclass
class CloudLink:
    """The wire between the station and one cloud."""

    name: str
    namespace: str | None = None  # None: loopback
    host_if: str = ""
    station_addr: str = "127.0.0.1"
    cloud_addr: str = "127.0.0.1"
    up: bool = True
    cuts: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.namespace is not None

    def prefix(self) -> list[str]:
        """Run a command inside the cloud's namespace (nothing on loopback)."""
        return ["ip", "netns", "exec", self.namespace] if self.namespace else []

    def cut(self) -> None:
        """Take the station's side of the link down (namespaced links only)."""
        if self.namespace:
            _check(_ip("link", "set", self.host_if, "down"), "cut")
        self.up = False
        self.cuts += 1

    def restore(self) -> None:
        if self.namespace:
            _check(_ip("link", "set", self.host_if, "up"), "restore")
        self.up = True

    def close(self) -> None:
        if self.namespace:
            _ip("link", "del", self.host_if)  # deletes the peer in the namespace too
            _ip("netns", "del", self.namespace)


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"ip {what}: {done.stderr.strip()}")


def make_links(names: list[str]) -> tuple[dict[str, CloudLink], str]:
    """One link per cloud; (links, how) where `how` says namespaces or why loopback."""
    tag = f"fse{os.getpid() % 100000}"
    made: list[CloudLink] = []
    try:
        taken = _ip("-4", "-o", "addr", "show").stdout
        first = next(
            k
            for k in range(1, 250, len(names))
            if not any(f" 10.250.{k + j}." in taken for j in range(len(names)))
        )
        for i, name in enumerate(names):
            ns, host_if, peer = f"{tag}-{name}", f"{tag}h{i}", f"{tag}c{i}"
            link = CloudLink(name, ns, host_if)
            link.station_addr = SUBNET.format(i=first + i, host=1)
            link.cloud_addr = SUBNET.format(i=first + i, host=2)
            _check(_ip("netns", "add", ns), "netns add")
            made.append(link)
            _check(_ip("link", "add", host_if, "type", "veth", "peer", "name", peer), "veth")
            _check(_ip("link", "set", peer, "netns", ns), "move peer")
            _check(_ip("addr", "add", f"{link.station_addr}/30", "dev", host_if), "addr")
            _check(_ip("link", "set", host_if, "up"), "up")
            _check(_ip("-n", ns, "addr", "add", f"{link.cloud_addr}/30", "dev", peer), "addr")
            _check(_ip("-n", ns, "link", "set", peer, "up"), "peer up")
            _check(_ip("-n", ns, "link", "set", "lo", "up"), "lo up")
        return {link.name: link for link in made}, "network namespaces joined by veth pairs"
    except (OSError, RuntimeError, StopIteration, subprocess.SubprocessError) as exc:
        for link in made:
            link.close()
        return (
            {name: CloudLink(name) for name in names},
            f"loopback proxy (namespaces could not be made: {exc})",
        )
