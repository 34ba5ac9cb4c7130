"""Which local process holds the other end of a loopback TCP connection
(Linux), so a proxy can tell which node is calling.

All nodes connect from ``127.0.0.1`` with ports the kernel picks, so the
source address says nothing; the socket's inode, which the kernel reports
for one connection at a time over ``NETLINK_SOCK_DIAG`` (what ``ss`` uses)
and which is found among a process's open files, says who owns it.  Without
netlink it is looked up in ``/proc/net/tcp`` (slow on a machine with tens of
thousands of sockets: the whole table is read).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable

__all__ = ["connection_owners"]

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def connection_owners(pairs: Iterable[tuple[int, int]], pids: Iterable[int]) -> dict[tuple[int, int], int]:
    """For each ``(local_port, remote_port)`` of a loopback TCP socket, the
    first of ``pids`` that holds it open; pairs nobody of ``pids`` holds
    are left out."""
    inodes = _inodes(set(pairs))
    if not inodes:
        return {}
    wanted = {f"socket:[{inode}]": pair for pair, inode in inodes.items()}
    found: dict[tuple[int, int], int] = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                pair = wanted.get(os.readlink(f"{fd_dir}/{name}"))
            except OSError:
                continue
            if pair is not None and pair not in found:
                found[pair] = pid
        if len(found) == len(wanted):
            break
    return found


_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NETLINK_SOCK_DIAG = 4
_LOOPBACK = socket.inet_aton("127.0.0.1") + bytes(12)


def _inodes(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """The inode of each loopback socket bound to ``local`` and connected to ``remote``."""
    try:
        return _inodes_netlink(pairs)
    except OSError:
        return _inodes_proc(pairs)


def _inodes_netlink(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """One exact ``inet_diag`` request per pair (IPv4 loopback)."""
    found: dict[tuple[int, int], int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        for seq, (local, remote) in enumerate(pairs, 1):
            sockid = struct.pack("!HH", local, remote) + _LOOPBACK + _LOOPBACK + struct.pack("=III", 0, 0xFFFFFFFF,
                                                                                            0xFFFFFFFF)
            body = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
            nl.send(struct.pack("=IHHII", 16 + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, seq, 0) + body)
            reply = nl.recv(65536)
            _, kind = struct.unpack_from("=IH", reply)
            if kind == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply, 16)[0]
                if code in (errno.ENOENT, 0):
                    continue
                raise OSError(code, os.strerror(code))
            inode = struct.unpack_from("=I", reply, 16 + 68)[0]  # inet_diag_msg.idiag_inode
            if inode:
                found[(local, remote)] = inode
    return found


def _inodes_proc(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    by_text = {(f":{local:04X}", f":{remote:04X}"): (local, remote) for local, remote in pairs}
    found: dict[tuple[int, int], int] = {}
    for table in _TABLES:
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)  # header
                for line in fh:
                    fields = line.split(None, 10)
                    if len(fields) < 10:
                        continue
                    local, remote = fields[1], fields[2]
                    pair = by_text.get((local[local.rfind(":"):], remote[remote.rfind(":"):]))
                    if pair is not None and fields[9] != "0":
                        found[pair] = int(fields[9])
        except OSError:
            continue
    return found
