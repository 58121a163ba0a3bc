"""Linux system calls the standard library does not wrap, through ctypes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

MACHINE = platform.machine()
# syscall numbers by architecture: (x86_64, aarch64)
_NR = {
    "pivot_root": (155, 41),
    "landlock_create_ruleset": (444, 444),
    "landlock_add_rule": (445, 445),
    "landlock_restrict_self": (446, 446),
    "mount_setattr": (442, 442),
    "capset": (126, 91),
    "capget": (125, 90),
    "seccomp": (317, 277),
    "openat2": (437, 437),
    "clone": (56, 220),
}


def nr(name: str) -> int:
    index = {"x86_64": 0, "aarch64": 1}.get(MACHINE)
    if index is None:
        raise OSError(f"unsupported architecture {MACHINE}")
    return _NR[name][index]


def check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def syscall(name: str, *args: object) -> int:
    return check(libc.syscall(nr(name), *args), name)


CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36


_python_libc = ctypes.PyDLL(None, use_errno=True)  # its calls keep the GIL, as os.fork's fork() does
_python_libc.syscall.restype = ctypes.c_long


def single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def fork_into_namespaces(flags: int) -> int:
    """`os.fork()` whose child starts in the new namespaces `flags` names: 0 in the child, its pid in
    the parent. Python's fork handlers run as for `os.fork()`; libc's do not (it has no such call), so
    it is only for a process with one thread, where no other thread can hold one of libc's locks."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _python_libc.syscall(ctypes.c_long(nr("clone")), ctypes.c_ulong(flags | signal.SIGCHLD), 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    errno = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, f"clone: {os.strerror(errno)}")
    return pid


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def b(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    check(
        libc.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data)),
        f"mount {source or ''} on {target}",
    )


def umount2(target: str, flags: int) -> None:
    check(libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return check(
        libc.prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(arg2),
            ctypes.c_ulong(arg3),
            ctypes.c_ulong(arg4),
            ctypes.c_ulong(arg5),
        ),
        f"prctl({option})",
    )


def sethostname(name: str) -> None:
    data = name.encode()
    check(libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
AT_RECURSIVE = 0x8000
AT_FDCWD = -100


def mount_setattr(path: str, attr_set: int, *, recursive: bool) -> None:
    attr = _MountAttr(attr_set, 0, 0, 0)
    syscall(
        "mount_setattr",
        ctypes.c_int(AT_FDCWD),
        path.encode(),
        ctypes.c_uint(AT_RECURSIVE if recursive else 0),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


def pivot_root(new_root: str, put_old: str) -> None:
    syscall("pivot_root", new_root.encode(), put_old.encode())


_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


LAST_CAPABILITY = _last_capability()  # read where this is imported (the zygote), not in every session


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable capability sets."""
    for cap in range(LAST_CAPABILITY + 1):
        with contextlib.suppress(OSError):
            prctl(PR_CAPBSET_DROP, cap)
    with contextlib.suppress(OSError):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    syscall("capset", ctypes.byref(header), ctypes.byref(data))


def effective_capabilities() -> int:
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    syscall("capget", ctypes.byref(header), ctypes.byref(data))
    return data[0].effective | data[1].effective << 32


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


RESOLVE_NO_SYMLINKS = 0x04


def open_path_no_symlinks(path: str) -> int:
    """An O_PATH descriptor of `path`, refusing (ELOOP) if any component is a symbolic link."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS)
    return syscall(
        "openat2", ctypes.c_int(AT_FDCWD), path.encode(), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
    )
