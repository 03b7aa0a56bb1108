"""Which network interface the gloo control group uses: the one that reaches ``MASTER_ADDR``.

Gloo binds to the address this host's name resolves to unless ``GLOO_SOCKET_IFNAME`` names an interface. On many
clusters the hostname resolves to 127.0.1.1, or to an interface the other nodes cannot reach, and the group hangs
while NCCL (which picks its own interface) would have connected. So: ``GLOO_SOCKET_IFNAME`` when the user set it,
else the interface holding the local address the kernel routes to ``MASTER_ADDR`` from (a UDP ``connect`` sends
nothing: it only chooses the route). ``connect_deadline`` turns a group that does not connect into one line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterator, Mapping

CONNECT_TIMEOUT_S = 60.0  # a control group that has not connected by then will not: say why instead of hanging
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def local_address_to(host: str, port: int = 29500) -> str | None:
    """The local IPv4 address the kernel would send from to reach ``host`` (None if it cannot be routed)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError:
        return None


def interface_address(name: str) -> str | None:
    """The IPv4 address of interface ``name`` (Linux; None elsewhere or when it has none)."""
    try:
        import fcntl

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        return socket.inet_ntoa(packed[20:24])
    except (OSError, ImportError):
        return None


def interface_with(address: str) -> str | None:
    """The name of the interface holding ``address``, if any."""
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        return None
    return next((n for n in names if interface_address(n) == address), None)


def choose_gloo_interface(env: Mapping[str, str]) -> tuple[str | None, str]:
    """(interface for gloo or None to leave gloo's default, how it was chosen: for messages)."""
    if env.get("GLOO_SOCKET_IFNAME"):
        return env["GLOO_SOCKET_IFNAME"], "GLOO_SOCKET_IFNAME"
    master = env.get("MASTER_ADDR", "")
    if not master:
        return None, "no MASTER_ADDR"
    port = int(env.get("MASTER_PORT", "29500") or 29500)
    local = local_address_to(master, port)
    name = interface_with(local) if local else None
    return name, f"the route to MASTER_ADDR {master} (local address {local or '?'})"


def set_gloo_interface(env: dict[str, str] | os._Environ = os.environ) -> str:
    """Set GLOO_SOCKET_IFNAME (read by gloo when a group is created) unless the user did; returns a description of
    the choice for the timeout message."""
    name, how = choose_gloo_interface(env)
    if name and "GLOO_SOCKET_IFNAME" not in env:
        env["GLOO_SOCKET_IFNAME"] = name
    return f"interface {name or 'gloo default (the hostname address)'} from {how}"


def failure_line(what: str, choice: str, env: Mapping[str, str]) -> str:
    """One line: what went wrong (``what``), the interface and the address tried, what to set."""
    master = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    return (f"the gloo control group {what} (tried {choice}, MASTER_ADDR {master}): set GLOO_SOCKET_IFNAME (and "
            "NCCL_SOCKET_IFNAME) to the interface that reaches the other nodes (see `ip -brief addr`), and check "
            "that no firewall blocks the ports between them")


@contextlib.contextmanager
def connect_deadline(line: str, seconds: float = CONNECT_TIMEOUT_S) -> Iterator[None]:
    """Run the group set-up; if it is still running after ``seconds``, print ``error: line`` and exit 2 (the
    set-up blocks inside gloo's C++ connect, where no exception can reach it)."""

    def expire() -> None:
        print(f"error: {line}", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
