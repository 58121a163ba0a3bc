"""Attacks on the kernel's surface: dangerous system calls, devices, /proc and /sys knobs.

Only harmless arguments are used: were a call allowed, it would still do nothing to the machine
(files are opened for writing but never written, the reboot call only asks to disable Ctrl-Alt-Del).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from attacks import assert_alive, assert_blocked, probe

_X86_64 = platform.machine() == "x86_64"

# name: (x86_64 number, aarch64 number, arguments as Python source)
SYSCALLS = {
    "io_uring_setup": (425, 425, "8, ctypes.byref(ctypes.create_string_buffer(120))"),
    "bpf": (321, 280, "0, ctypes.byref(ctypes.create_string_buffer(128)), 128"),  # BPF_MAP_CREATE
    "perf_event_open": (298, 241, "ctypes.byref(ctypes.create_string_buffer(128)), 0, -1, -1, 0"),
    "keyctl": (250, 219, "0, -3, 0"),  # KEYCTL_GET_KEYRING_ID of the user keyring
    "add_key": (248, 217, "b'user', b'codeact-attack', b'data', 4, -4"),
    "request_key": (249, 218, "b'user', b'codeact-attack', None, 0"),
    "userfaultfd": (323, 282, "0"),
    "init_module": (175, 105, "None, 0, b''"),
    "finit_module": (313, 273, "-1, b'', 0"),
    "delete_module": (176, 106, "b'codeact_no_such_module', 0x800"),
    "kexec_load": (246, 104, "0, 0, None, 0"),
    "open_by_handle_at": (304, 265, "-100, ctypes.byref(ctypes.create_string_buffer(136)), 0"),
    "name_to_handle_at": (
        303,
        264,
        "-100, b'/tmp', ctypes.byref(ctypes.create_string_buffer(136)), ctypes.byref(ctypes.c_int()), 0",
    ),
    "syslog": (103, 116, "10, None, 0"),  # SYSLOG_ACTION_SIZE_BUFFER
    "reboot": (169, 142, "0xfee1dead, 672274793, 0"),  # LINUX_REBOOT_CMD_CAD_OFF
    "swapoff": (168, 225, "b'/tmp/no-such-swap'"),
    "acct": (163, 89, "None"),
    "fanotify_init": (300, 262, "0, 0"),
    "pidfd_getfd": (438, 438, "-1, 0, 0"),
}


@pytest.mark.parametrize("name", sorted(SYSCALLS))
def test_dangerous_system_call_is_denied(make_sandbox, name):
    x86, arm, args = SYSCALLS[name]
    number = x86 if _X86_64 else arm
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(ctypes.c_long({number}), {args})
        err = ctypes.get_errno()
        if rc == -1 and err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            raise PermissionError(err, os.strerror(err))
        return (rc, errno.errorcode.get(err, err) if rc == -1 else None)
    """,
    )
    assert_blocked(outcome, f"call {name}() (answered with an error the kernel chose, not a refusal)")
    assert_alive(sb)


def test_x32_syscall_numbers_do_not_bypass_the_filter(make_sandbox):
    if not _X86_64:
        pytest.skip("the x32 ABI exists on x86_64 only")
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        X32 = 0x40000000
        results = {}
        for name, nr, args in (("getpid", 39, ()), ("unshare", 272, (0x10000000,)),
                               ("execve", 520, (b"/bin/sh", None, None))):
            rc = libc.syscall(ctypes.c_long(X32 | nr), *args)
            if rc >= 0:
                results[name] = rc
        if not results:
            raise PermissionError("every x32 call was refused")
        return results
    """,
    )
    assert_blocked(outcome, "use x32 system call numbers")
    assert_alive(sb)


def test_clone3_cannot_create_namespaces(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes, os, struct
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        args = ctypes.create_string_buffer(struct.pack("QQQQQQQQ", 0x10000000 | 0x20000000, 0, 0, 0, 17, 0, 0, 0), 64)
        pid = libc.syscall(ctypes.c_long(435), args, ctypes.c_size_t(64))
        if pid == 0:
            os._exit(0)
        if pid < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        os.waitpid(pid, 0)
        return f"clone3 made {pid} in new namespaces"
    """,
    )
    assert_blocked(outcome, "clone3 with CLONE_NEWUSER | CLONE_NEWPID")
    assert_alive(sb)


@pytest.mark.parametrize(
    "device",
    [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/kmsg",
        "/dev/sda",
        "/dev/vda",
        "/dev/nvme0n1",
        "/dev/tty",
        "/dev/console",
        "/dev/kvm",
        "/dev/fuse",
        "/dev/net/tun",
    ],
)
def test_host_devices_cannot_be_opened(make_sandbox, device):
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import os
        fd = os.open({device!r}, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
        return "opened"
    """,
    )
    assert_blocked(outcome, f"open {device}")
    assert_alive(sb)


def test_the_hosts_shared_memory_is_out_of_reach(make_sandbox):
    # /dev/shm inside is the session's own tmpfs (multiprocessing keeps its semaphores there): what the
    # host or another session keeps in its /dev/shm is never visible, and nothing written inside leaks out.
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this host")
    marker = f"/dev/shm/codeact-host-{os.getpid()}"
    with open(marker, "w") as f:
        f.write("host secret")
    try:
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import os
            if os.path.exists({marker!r}):
                return "host file visible: " + open({marker!r}).read()
            try:
                with open("/dev/shm/planted-by-sandbox", "w") as f:
                    f.write("x")
            except OSError as exc:
                raise PermissionError(str(exc))
            return "wrote /dev/shm/planted-by-sandbox"
        """,
        )
        assert not os.path.exists("/dev/shm/planted-by-sandbox"), "ATTACK SUCCEEDED: the sandbox wrote to host /dev/shm"
        assert "host file visible" not in outcome.detail, f"ATTACK SUCCEEDED: {outcome}"
        assert_alive(sb)
    finally:
        os.unlink(marker)


def test_device_nodes_cannot_be_created(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import os, stat
        made = []
        for path, kind, dev in (("/tmp/mem", stat.S_IFCHR, os.makedev(1, 1)),
                                ("/tmp/disk", stat.S_IFBLK, os.makedev(8, 0)),
                                ("/dev/mem2", stat.S_IFCHR, os.makedev(1, 1))):
            try:
                os.mknod(path, 0o600 | kind, dev)
                made.append(path)
                os.open(path, os.O_RDONLY)
                made.append(path + " opened")
            except OSError:
                pass
        if not made:
            raise PermissionError("no device node could be made")
        return made
    """,
    )
    assert_blocked(outcome, "create device nodes")
    assert_alive(sb)


@pytest.mark.parametrize(
    "path",
    [
        "/proc/sysrq-trigger",
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/hostname",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/self/oom_score_adj",
        "/proc/1/attr/current",
        "/proc/kmsg",
        "/proc/kcore",
    ],
)
def test_kernel_knobs_in_proc_cannot_be_opened_for_writing(make_sandbox, path):
    # Opening for writing is the attack; nothing is ever written.
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import os
        fd = os.open({path!r}, os.O_WRONLY)
        os.close(fd)
        return "opened for writing"
    """,
    )
    if path == "/proc/self/oom_score_adj" and outcome.status == "ok":
        # raising one's own OOM score is allowed everywhere; lowering it is the attack
        outcome = probe(
            sb,
            """
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("-1000")
            return open("/proc/self/oom_score_adj").read()
        """,
        )
    assert_blocked(outcome, f"open {path} for writing")
    assert_alive(sb)


@pytest.mark.parametrize("path", ["/proc/kcore", "/proc/kmsg", "/proc/1/mem", "/proc/self/pagemap", "/proc/kallsyms"])
def test_kernel_memory_and_addresses_are_unreadable(make_sandbox, path):
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        with open({path!r}, "rb") as f:
            data = f.read(4096)
        if {path!r} == "/proc/kallsyms" and all(line.startswith(b"0000000000000000") for line in data.splitlines()):
            raise PermissionError("kallsyms shows no addresses")
        if {path!r} == "/proc/self/pagemap" and not any(int.from_bytes(data[i:i + 8], "little") & ((1 << 55) - 1)
                                                       for i in range(0, len(data), 8)):
            raise PermissionError("pagemap shows no physical frames")
        if not data:
            raise PermissionError("nothing to read")
        return data[:64]
    """,
    )
    assert_blocked(outcome, f"read {path}")
    assert_alive(sb)


def test_cgroup_and_sysfs_controls_are_out_of_reach(make_sandbox, backend):
    sb = make_sandbox(memory_limit="256MB")
    outcome = probe(
        sb,
        """
        import os
        reached = []
        for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max",
                     "/sys/fs/cgroup/cgroup.procs", "/sys/kernel/uevent_helper", "/sys/power/state",
                     "/proc/1/root/sys/fs/cgroup/memory/release_agent"):
            try:
                fd = os.open(path, os.O_WRONLY)
                os.close(fd)
                reached.append(path)
            except OSError:
                pass
        cgroup = open("/proc/self/cgroup").read()
        for line in cgroup.splitlines():
            rel = line.split(":", 2)[2]
            for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
                target = base + rel + "/memory.limit_in_bytes"
                if os.path.exists(target):
                    reached.append(target)
        if not reached:
            raise PermissionError("no cgroup or sysfs control is reachable")
        return reached
    """,
    )
    assert_blocked(outcome, "reach cgroup or sysfs controls")
    if backend == "process" and getattr(sb.backend, "_cgroup", None):
        limit_file = sb.backend._cgroup[0] + "/memory.limit_in_bytes"
        try:
            with open(limit_file) as f:
                limit = int(f.read())
        except OSError:
            limit = None
        assert limit is None or limit <= (256 + 64) << 20, f"the session's cgroup memory limit is now {limit}"
    assert_alive(sb)


def test_terminal_injection_is_denied(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes, fcntl, os, termios
        done = []
        for fd in (0, 1, 2):
            for request in (termios.TIOCSTI, 0x541C):  # TIOCLINUX
                try:
                    fcntl.ioctl(fd, request, b"x")
                    done.append((fd, request))
                except OSError:
                    pass
        if not done:
            raise PermissionError("no terminal ioctl worked")
        return done
    """,
    )
    assert_blocked(outcome, "inject keystrokes into a terminal")
    assert_alive(sb)


def test_personality_cannot_weaken_memory_protections(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC = 0x0040000, 0x0400000
        rc = libc.personality(ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC)
        now = libc.personality(0xffffffff)
        if rc == -1 or not now & READ_IMPLIES_EXEC:
            raise PermissionError(ctypes.get_errno(), "personality refused")
        return hex(now)
    """,
    )
    assert_blocked(outcome, "set personality(READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE)")
    assert_alive(sb)


_WITHOUT_LANDLOCK = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)

class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

# landlock_* (444..446) fail with ENOSYS, as on a kernel without Landlock; everything else is allowed
rows = [(0x20, 0, 0, 0), (0x35, 0, 2, 444), (0x35, 1, 0, 447), (0x06, 0, 0, 0x00050000 | 38),
        (0x06, 0, 0, 0x7FFF0000)]
program = (Filter * len(rows))(*[Filter(*r) for r in rows])
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.syscall(317, 1, 0, ctypes.byref(Prog(len(rows), program))) == 0

from codeact import Sandbox
with Sandbox() as sb:
    landlock = next(layer for layer in sb.layers if layer.name == "landlock")
    opened = []
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic"):
        r = sb.execute(f"import os\nos.close(os.open({path!r}, os.O_WRONLY))\n'opened'")  # never written
        if r.value == "'opened'":
            opened.append(path)
    print(json.dumps({"landlock": landlock.active, "opened": opened, "sum": sb.execute("sum(range(10))").value}))
"""


def test_kernel_knobs_stay_read_only_when_landlock_is_missing(backend, tmp_path):
    # The session's uid maps to the host's user, root here: to the kernel's sysctl checks it is
    # root. Landlock alone keeps /proc/sys shut; on a kernel without it (non-strict mode runs on),
    # writing "|/path/to/program" to core_pattern would run a program as host root.
    if backend != "process" or platform.machine() != "x86_64":
        pytest.skip("simulates a kernel without Landlock for the native backend on x86_64")
    script = tmp_path / "no_landlock.py"
    script.write_text(_WITHOUT_LANDLOCK)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["landlock"] is False, "control: the simulated kernel has no Landlock"
    assert out["sum"] == "45", "control: the sandbox runs without Landlock"
    assert not out["opened"], (
        f"ATTACK SUCCEEDED: without Landlock a session can open {out['opened']} for writing on the host"
    )


def test_i386_system_calls_do_not_bypass_the_filter(make_sandbox, backend):
    # `int 0x80` from a 64-bit process uses the 32-bit table, where every number means another call.
    if not _X86_64:
        pytest.skip("the i386 ABI exists on x86_64 only")
    if backend == "pyodide":
        pytest.skip("pyodide: WebAssembly cannot run machine code; a call to a bad function pointer ends the runtime")
    sb = make_sandbox()
    assert sb.execute("kept = 'k'").error is None
    outcome = probe(
        sb,
        """
        import ctypes, mmap
        code = bytes([0xB8, 20, 0, 0, 0,  # mov eax, 20 (getpid in the i386 table)
                      0xCD, 0x80,          # int 0x80
                      0xC3])               # ret
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        call = ctypes.CFUNCTYPE(ctypes.c_int)(address)
        result = call()
        if result < 0:
            raise PermissionError(-result, "the i386 call was refused")
        return f"i386 getpid answered {result}"
    """,
    )
    assert_blocked(outcome, "make an i386 system call with int 0x80")
    assert sb.execute("kept").value == "'k'", "the session lost its variables"


def test_sysv_shared_memory_of_the_host_is_invisible(make_sandbox):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x0C0DEAC7
    shmid = libc.shmget(key, 4096, 0o1600)  # IPC_CREAT | 0600
    if shmid < 0:
        pytest.skip(f"cannot create SysV shared memory here (errno {ctypes.get_errno()})")
    try:
        libc.shmat.restype = ctypes.c_void_p
        address = libc.shmat(shmid, None, 0)
        ctypes.memmove(address, b"HOST-SHM-SECRET", 15)
        libc.shmdt(ctypes.c_void_p(address))
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            libc.shmat.restype = ctypes.c_void_p
            shmid = libc.shmget({key}, 0, 0)
            if shmid < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            address = libc.shmat(shmid, None, 0o10000)  # SHM_RDONLY
            if address in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return ctypes.string_at(address, 15)
        """,
        )
        assert_blocked(outcome, "attach the host's SysV shared memory")
        assert_alive(sb)
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID
