"""Which local process holds the other end of a loopback TCP connection
(Linux ``/proc``), so a proxy can tell which node is calling.

All nodes connect from ``127.0.0.1`` with ports the kernel picks, so the
source address says nothing; the socket's inode, listed in
``/proc/net/tcp`` and found among a process's open files, says who owns it.
"""

from __future__ import annotations

import os
from typing import Iterable

__all__ = ["find_owner", "socket_inode"]

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the TCP socket bound to ``local_port`` and connected to
    ``remote_port`` (loopback), or ``None`` if the kernel lists none."""
    want_local = f":{local_port:04X}"
    want_remote = f":{remote_port:04X}"
    for table in _TABLES:
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)  # header
                for line in fh:
                    fields = line.split()
                    if len(fields) > 9 and fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                        inode = int(fields[9])
                        if inode:
                            return inode
        except OSError:
            continue
    return None


def find_owner(inode: int, pids: Iterable[int]) -> int | None:
    """The first of ``pids`` holding socket ``inode`` open, or ``None``."""
    target = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == target:
                    return pid
            except OSError:
                continue
    return None
