"""Landlock: the kernel's own allowlist of file paths, TCP ports, signals and abstract sockets."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Sequence

from codeact.sandbox.process import linux

_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_REMOVE_DIR = 1 << 4
_REMOVE_FILE = 1 << 5
_MAKE_CHAR = 1 << 6
_MAKE_DIR = 1 << 7
_MAKE_REG = 1 << 8
_MAKE_SOCK = 1 << 9
_MAKE_FIFO = 1 << 10
_MAKE_BLOCK = 1 << 11
_MAKE_SYM = 1 << 12
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5

_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX = 1 << 0
_SCOPE_SIGNAL = 1 << 1

_READ = _READ_FILE | _READ_DIR
_WRITE = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG | _MAKE_SOCK | _MAKE_FIFO | _MAKE_SYM


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The Landlock ABI version of this kernel, 0 when Landlock is unavailable."""
    try:
        return linux.syscall("landlock_create_ruleset", None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except OSError:
        return 0


class _NetPort(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def restrict(
    *,
    read: list[str],
    write: list[str],
    devices: list[str],
    deny_tcp: bool,
    connect_ports: Sequence[int] = (),
    exact: frozenset[str] = frozenset(),
    executable: int = -1,
) -> int:
    """Allow only reading `read`, writing `write` and using `devices`; returns the ABI used.

    With `deny_tcp` (ABI 4+) no TCP port may be bound, and only `connect_ports` connected to.
    Given `executable`, a file's descriptor, that file may be read, and executing is left alone (for
    `forbid_execute` to take away from the caller's children).

    Paths in `exact` are opened without following symbolic links (a link there is refused).
    """
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available on this kernel")
    handled = (0 if executable >= 0 else _EXECUTE) | _READ | _WRITE | _MAKE_CHAR | _MAKE_BLOCK
    if abi >= 2:
        handled |= _REFER
    if abi >= 3:
        handled |= _TRUNCATE
    if abi >= 5:
        handled |= _IOCTL_DEV
    writable = _READ | _WRITE | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4 and deny_tcp:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = 24
    ruleset = linux.syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        rules = [(p, _READ) for p in read] + [(p, writable) for p in write]
        dev_access = _READ_FILE | _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0)
        rules += [(p, dev_access) for p in devices]
        for path, access in rules:
            fd = linux.open_path_no_symlinks(path) if path in exact else os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if not os.path.isdir(path):
                    access &= _READ_FILE | _WRITE_FILE | _TRUNCATE | _EXECUTE | _IOCTL_DEV
                rule = _PathBeneath(access & handled, fd)
                linux.syscall(
                    "landlock_add_rule",
                    ctypes.c_int(ruleset),
                    ctypes.c_int(1),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
            finally:
                os.close(fd)
        if executable >= 0:
            rule = _PathBeneath(_READ_FILE, executable)
            with contextlib.suppress(OSError):  # without it, executing that file fails: no other loss
                linux.syscall(
                    "landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)
                )
        if attr.handled_access_net:
            for port in connect_ports:
                net_rule = _NetPort(_NET_CONNECT_TCP, port)
                linux.syscall(
                    "landlock_add_rule",
                    ctypes.c_int(ruleset),
                    ctypes.c_int(2),
                    ctypes.byref(net_rule),
                    ctypes.c_uint32(0),
                )
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        linux.syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return abi


def forbid_execute() -> None:
    """Stack a domain on the caller's that lets it execute no file at all."""
    attr = _RulesetAttr(_EXECUTE, 0, 0)
    ruleset = linux.syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    try:
        linux.syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
