"""A seccomp-BPF filter for sandboxed code: no exec, no new namespaces, no kernel attack surface."""

from __future__ import annotations

import ctypes
import errno
import functools
import socket

from codeact.sandbox.process import linux

_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Denied outright, by name: (x86_64, aarch64); None where the architecture has no such call.
_DENIED = {
    "execve": (59, 221),
    "execveat": (322, 281),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount_setattr": (442, 442),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "iopl": (172, None),
    "ioperm": (173, None),
    "quotactl": (179, 60),
    "syslog": (103, 116),
    "vhangup": (153, 58),
    "fanotify_init": (300, 262),
    "pidfd_getfd": (438, 438),
    "kcmp": (312, 272),
    "lookup_dcookie": (212, 18),
    "personality": (135, 92),
    "uselib": (134, None),
    "mbind": (237, 235),
    "migrate_pages": (256, 238),
    "move_pages": (279, 239),
    "set_mempolicy": (238, 237),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
}
_CLONE = (56, 220)
_CLONE3 = (435, 435)
_SOCKET = (41, 198)
_IOCTL = (16, 29)
# Without network, sockets exist only as socketpairs: nothing may address a socket by name
# (a host service's unix socket could sit in a granted path).
_ADDRESSING = {"connect": (42, 203), "sendmsg": (46, 211), "sendmmsg": (307, 269)}
_SENDTO = (44, 206)
# Calls that set file mode bits, with the index of their mode argument: setuid and setgid bits are
# refused, since a file the sandbox writes belongs to the host user on the host.
_MODE_SETTERS = {
    "chmod": ((90, 1), None),
    "fchmod": ((91, 1), (52, 1)),
    "fchmodat": ((268, 2), (53, 2)),
    "fchmodat2": ((452, 2), (452, 2)),
    "creat": ((85, 1), None),
    "mkdir": ((83, 1), None),
    "mkdirat": ((258, 2), (34, 2)),
    "mknod": ((133, 1), None),
    "mknodat": ((259, 2), (33, 2)),
}
# open and openat take a mode only with O_CREAT or O_TMPFILE: (number, flags index, mode index)
_OPENERS = {"open": ((2, 1, 2), None), "openat": ((257, 2, 3), (56, 2, 3))}
_OPENAT2 = (437, 437)  # its mode sits in a struct a filter cannot read: refused, libc falls back
_SETID_BITS = 0o6000
_O_CREAT_OR_TMPFILE = 0o100 | 0o20000000
_EXEC = ("execve", "execveat")
_FORK_ONLY = {"fork": (57, None), "vfork": (58, None)}

_NS_FLAGS = (
    linux.CLONE_NEWNS
    | linux.CLONE_NEWCGROUP
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWUSER
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWNET
    | linux.CLONE_NEWTIME
)
_CLONE_THREAD = 0x00010000
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_JGE_K = 0x35
_RET_K = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def _arch_index() -> int:
    index = {"x86_64": 0, "aarch64": 1}.get(linux.MACHINE)
    if index is None:
        raise OSError(f"seccomp filter not available for architecture {linux.MACHINE}")
    return index


def build(*, allow_network: bool, allow_fork: bool = True, allow_exec: bool = False) -> list[tuple[int, int, int, int]]:
    """The BPF program as (code, jt, jf, k) rows. Denied calls fail with EPERM."""
    i = _arch_index()
    denied = [nums[i] for name, nums in _DENIED.items() if nums[i] is not None and not (allow_exec and name in _EXEC)]
    if not allow_fork:
        denied += [nums[i] for nums in _FORK_ONLY.values() if nums[i] is not None]
    if not allow_network:
        denied += [nums[i] for nums in _ADDRESSING.values()]
    # Rows whose jt/jf are label names jump to the shared returns at the end of the program.
    sym: list[tuple[int, int | str, int | str, int]] = [
        (_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_JEQ_K, 1, 0, _ARCH[linux.MACHINE]),
        (_RET_K, 0, 0, _KILL_PROCESS),
        (_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if linux.MACHINE == "x86_64":
        sym.append((_JGE_K, "DENY", 0, 0x40000000))  # x32 ABI
    sym.extend((_JEQ_K, "DENY", 0, number) for number in denied)
    sym.append((_JEQ_K, "ENOSYS", 0, _CLONE3[i]))  # libc falls back to clone, whose flags we see
    sym.append((_JEQ_K, "ENOSYS", 0, _OPENAT2[i]))

    def block(number: int, rows: list[tuple[int, int | str, int | str, int]]) -> None:
        sym.append((_JEQ_K, 0, len(rows), number))
        sym.extend(rows)

    def arg(index: int) -> tuple[int, int, int, int]:
        return (_LD_W_ABS, 0, 0, 16 + 8 * index)  # low word of args[index]

    for per_arch in _MODE_SETTERS.values():
        if per_arch[i] is not None:
            number, mode = per_arch[i]
            block(number, [arg(mode), (_JSET_K, "DENY", "ALLOW", _SETID_BITS)])
    for per_arch in _OPENERS.values():
        if per_arch[i] is not None:
            number, flags, mode = per_arch[i]
            block(
                number,
                [
                    arg(flags),
                    (_JSET_K, 0, "ALLOW", _O_CREAT_OR_TMPFILE),
                    arg(mode),
                    (_JSET_K, "DENY", "ALLOW", _SETID_BITS),
                ],
            )
    clone_last = (_JSET_K, "ALLOW", "DENY", _CLONE_THREAD) if not allow_fork else (_RET_K, 0, 0, _ALLOW)
    block(_CLONE[i], [(_LD_W_ABS, 0, 0, 16), (_JSET_K, "DENY", 0, _NS_FLAGS), clone_last])
    if not allow_network:
        block(_SOCKET[i], [(_LD_W_ABS, 0, 0, 16), (_JEQ_K, "ALLOW", "DENY", socket.AF_UNIX)])
        # sendto with a destination address (args[4], both words) is addressing by name too
        block(
            _SENDTO[i],
            [(_LD_W_ABS, 0, 0, 48), (_JEQ_K, 0, "DENY", 0), (_LD_W_ABS, 0, 0, 52), (_JEQ_K, "ALLOW", "DENY", 0)],
        )
    block(
        _IOCTL[i],
        [(_LD_W_ABS, 0, 0, 24), (_JEQ_K, "DENY", 0, _TIOCSTI), (_JEQ_K, "DENY", "ALLOW", _TIOCLINUX)],
    )
    labels = {"ALLOW": len(sym), "DENY": len(sym) + 1, "ENOSYS": len(sym) + 2}
    sym += [(_RET_K, 0, 0, _ALLOW), (_RET_K, 0, 0, _ERRNO | errno.EPERM), (_RET_K, 0, 0, _ERRNO | errno.ENOSYS)]

    def resolve(pc: int, jump: int | str) -> int:
        if isinstance(jump, int):
            return jump
        offset = labels[jump] - pc - 1
        if not 0 <= offset < 256:
            raise ValueError("seccomp jump out of range")
        return offset

    return [(code, resolve(pc, jt), resolve(pc, jf), k) for pc, (code, jt, jf, k) in enumerate(sym)]


def install(*, allow_network: bool, allow_fork: bool = True, allow_exec: bool = False) -> int:
    """Install the filter on the calling thread (and its future children). Returns its length."""
    _, prog = _program(allow_network, allow_fork, allow_exec)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.syscall("seccomp", ctypes.c_uint(1), ctypes.c_uint(0), ctypes.byref(prog))  # SET_MODE_FILTER
    return int(prog.len)


def prepare() -> None:
    """Build every filter a session installs, once, in the process its sessions are forked from: a
    session's first build would cost it about a millisecond of cold code."""
    for network in (False, True):
        _program(network, True, True)  # the keeper's
        for fork in (False, True):
            _program(network, fork, False)  # the code's


@functools.cache
def _program(allow_network: bool, allow_fork: bool, allow_exec: bool) -> tuple[ctypes.Array[_Filter], _Prog]:
    """The filter as the kernel takes it, with the array its program points into (kept alive here)."""
    rows = build(allow_network=allow_network, allow_fork=allow_fork, allow_exec=allow_exec)
    array = (_Filter * len(rows))(*[_Filter(*r) for r in rows])
    return array, _Prog(len(rows), ctypes.cast(array, ctypes.POINTER(_Filter)))
