"""Entering a session's isolation: namespaces, a minimal read-only root, limits, Landlock, seccomp.

The zygote forks a session's keeper with `fork_session`, in new namespaces where it is pid 1 of the
session's pid namespace; `enter` then applies the rest of the session's config there, recording
every layer it could apply.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from codeact.sandbox.process import landlock, linux, seccomp

SANDBOX_UID = 1000
PROXY_PORT = 3128  # on the session's own loopback: its one way out when it has network
DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]
SYSTEM_PATHS = ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32", "/usr/share/zoneinfo"]
_SLEEP = next((p for p in ("/usr/bin/sleep", "/bin/sleep") if os.access(p, os.X_OK)), "")
LAYER_NAMES = [
    "user namespace",
    "mount namespace",
    "pid namespace",
    "net namespace",
    "ipc namespace",
    "uts namespace",
    "minimal root",
    "unprivileged uid",
    "no capabilities",
    "rlimits",
    "cgroup",
    "landlock",
    "seccomp",
    "wall-clock kill",
]
REMEDIES = {
    "user namespace": "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
    "user.max_user_namespaces > 0) or run in a container that allows them",
    "cgroup": "run as root, or delegate a writable cgroup (v2 with memory and pids controllers) to this user",
    "landlock": "use Linux 5.13+ with Landlock enabled (lsm=landlock,...)",
    "seccomp": "use an x86_64 or aarch64 Linux kernel with seccomp filters",
}


@dataclass
class SessionConfig:
    """What the host asks of one session; travels to the zygote as JSON."""

    read_paths: list[str] = field(default_factory=list)
    write_paths: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False  # a proxy port on the session's loopback, served by the host
    memory_limit: int = 1 << 30
    tmp_size: int = 256 << 20
    max_file_size: int = 256 << 20
    max_open_files: int = 256
    pids_max: int = 64
    output_limit: int = 1 << 20
    rollback: bool = True
    prefork: bool = True
    python_paths: list[str] = field(default_factory=list)
    sys_path: list[str] = field(default_factory=list)  # the host's, when the session was made (not the zygote's)
    certificates: list[str] = field(default_factory=list)  # the system's CA files, readable with network
    cwd: str = "/tmp"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Layers:
    """Which layers are active, by name, with a detail line each."""

    status: dict[str, tuple[bool, str]] = field(default_factory=dict)
    marks: list[tuple[str, float]] = field(default_factory=list)
    proxy_listener: int = -1  # the listening socket the host serves as the session's proxy

    def mark(self, stage: str) -> None:
        """Record when a start-up stage ended (monotonic clock, shared with the host)."""
        self.marks.append((stage, time.monotonic()))

    def set(self, name: str, active: bool, detail: str = "") -> None:
        self.status[name] = (active, detail)

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "active": self.status.get(n, (False, "not attempted"))[0],
                "detail": self.status.get(n, (False, "not attempted"))[1],
                "remedy": "" if self.status.get(n, (False, ""))[0] else REMEDIES.get(n, ""),
            }
            for n in LAYER_NAMES
        ]


NAMESPACES = (
    linux.CLONE_NEWUSER
    | linux.CLONE_NEWNS
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWNET
)


def fork_session() -> tuple[int, Layers]:
    """Fork a session's keeper (pid 1 of its pid namespace) in new namespaces where the system allows
    them: returns its pid in the caller, and 0 with the namespace layers recorded in the keeper.

    Nothing here depends on the session's config, so a spare session does it before it is asked for.
    A caller with threads may not clone itself (`linux.fork_into_namespaces`): its plain fork, the
    session's root, clones the keeper and stays outside the namespaces as `sleep` (`_stay_as_root`).
    """
    if linux.single_threaded():
        return _fork_keeper(fallback=os.fork)
    root = os.fork()
    if root:
        return root, Layers()
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    sleep = open_sleep()  # now: once the keeper builds the session's root, this path is gone from view
    keeper, layers = _fork_keeper(fallback=lambda: 0)  # without namespaces, the root is the keeper
    if keeper:
        os.closerange(0, max(sleep, 0))
        os.closerange(sleep + 1, 1 << 16)
        _stay_as_root(keeper, sleep)
    if sleep >= 0:
        os.close(sleep)
    return 0, layers


def _fork_keeper(fallback: Callable[[], int]) -> tuple[int, Layers]:
    """Clone the keeper into new namespaces; where that fails, `fallback()` makes it without them."""
    layers = Layers()
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    try:
        pid, error = linux.fork_into_namespaces(NAMESPACES), ""
    except OSError as exc:
        pid, error = fallback(), str(exc)
    if pid:
        return pid, layers
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if not error:
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{SANDBOX_UID} {outer_uid} 1")
            _write("/proc/self/gid_map", f"{SANDBOX_UID} {outer_gid} 1")
        except OSError as exc:
            error = str(exc)
    for name in ("user", "mount", "pid", "ipc", "uts", "net"):
        layers.set(f"{name} namespace", not error, error)
    uid = os.getuid()
    layers.set("unprivileged uid", uid != 0 and not error, f"uid {uid} in the user namespace (host uid {outer_uid})")
    layers.mark("keeper forked")
    return 0, layers


def enter(
    config: SessionConfig,
    layers: Layers,
    root_dir: str,
    scratch: str,
    cgroup: tuple[bool, str],
    marks: list[tuple[str, float]],
) -> int:
    """Isolate the keeper that `fork_session` returned in, for `config`, recording in `layers` every
    layer it could apply. `cgroup`: whether the process is in its own cgroup, and what that
    cgroup limits (or why there is none). Returns the descriptor of the `sleep` binary (-1 when there
    is none), opened before the session's root hides it, for the keeper to become."""
    sleep = open_sleep()
    layers.marks = sorted([*layers.marks, *marks], key=lambda mark: mark[1])
    layers.set("cgroup", *cgroup)
    layers.set("wall-clock kill", True, "the session's supervisor and the host kill overdue steps")
    in_namespaces = layers.status["user namespace"][0]
    if in_namespaces:
        layers.set(
            "net namespace",
            True,
            f"only a loopback whose port {PROXY_PORT} leads to codeact's proxy"
            if config.network
            else "only an unconfigured loopback",
        )
    root_built = False
    if in_namespaces:
        with contextlib.suppress(OSError):
            linux.sethostname("sandbox")
        try:
            _build_root(config, root_dir)
            root_built = True
            layers.set("minimal root", True, "pivot_root into a read-only tmpfs with granted paths bound in")
        except OSError as exc:
            layers.set("minimal root", False, str(exc))
    else:
        layers.set("minimal root", False, "needs a mount namespace")
    layers.mark("root built")
    if config.network and in_namespaces:  # never on the host's own loopback
        try:
            layers.proxy_listener = _proxy_listener()
        except OSError as exc:
            layers.set("net namespace", False, f"the proxy port could not be opened: {exc}")
    os.environ.clear()
    os.environ.update(config.env)
    if root_built:
        readable, writable = ["/"], ["/tmp", "/dev/shm", *config.write_paths]
        if _scratch_cwd(config):
            writable.append(config.cwd)
    else:  # the host's own tree is visible: allow only what a session needs, and a private scratch dir
        os.makedirs(scratch, mode=0o700, exist_ok=True)
        os.chdir(scratch)
        os.environ["TMPDIR"] = scratch
        readable = [p for p in _python_paths(config) + SYSTEM_PATHS + ["/proc/self"] if os.path.exists(p)]
        readable += config.read_paths + config.certificates
        writable = [scratch, *config.write_paths]
    _set_rlimits(config)
    layers.set(
        "rlimits",
        True,
        f"open files {config.max_open_files}, file size {config.max_file_size >> 20} MB, "
        f"processes {config.pids_max}, address space and CPU per step",
    )
    try:
        abi = landlock.restrict(
            read=readable,
            write=writable,
            devices=[d for d in DEVICES if os.path.exists(d)],
            deny_tcp=True,
            connect_ports=[PROXY_PORT] if config.network else [],
            exact=frozenset([*config.read_paths, *config.write_paths]),
            executable=sleep,  # for the keeper to become; `confine_code` forbids exec to the code's processes
        )
        layers.set(
            "landlock",
            True,
            f"ABI {abi}: files"
            f"{(', TCP only to the proxy' if config.network else ', TCP') if abi >= 4 else ''}"
            f"{', signals and abstract sockets' if abi >= 6 else ''}",
        )
    except OSError as exc:
        layers.set("landlock", False, str(exc))
    layers.mark("landlock")
    try:
        rows = seccomp.install(allow_network=config.network, allow_exec=True)
        layers.set(
            "seccomp",
            True,
            f"{rows}-instruction filter: no ptrace, mount, namespaces, kernel modules, bpf, io_uring"
            f"{', sockets other than socketpairs' if not config.network else ''}; "
            "the code's processes add one without exec",
        )
    except OSError as exc:
        layers.set("seccomp", False, str(exc))
        with contextlib.suppress(OSError):
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    try:
        linux.drop_capabilities()
        caps = linux.effective_capabilities()
        layers.set("no capabilities", caps == 0, f"effective set {caps:#x}")
    except OSError as exc:
        layers.set("no capabilities", False, str(exc))
    layers.mark("seccomp and capabilities")
    return sleep


def confine_code(layers: Layers, *, network: bool, fork: bool) -> None:
    """In a process the keeper forks to run the session's code: no exec at all, and without `fork`, no
    fork either. The keeper itself, which runs none of the code, keeps exec to become `sleep` once it
    only reaps (`runner.Session.keep`); whatever the code's processes do, they inherit these limits."""
    if layers.status["seccomp"][0]:
        seccomp.install(allow_network=network, allow_fork=fork)
    if layers.status["landlock"][0]:
        landlock.forbid_execute()


def open_sleep() -> int:
    """The `sleep` binary, opened to be executed later by descriptor; -1 where there is none."""
    try:
        return os.open(_SLEEP, os.O_RDONLY | os.O_CLOEXEC) if _SLEEP else -1
    except OSError:
        return -1


def _stay_as_root(keeper: int, sleep: int) -> NoReturn:
    """Be the session's root outside its namespaces until the session is killed.

    It only has to exist (the zygote reaps it to clean up after the session) and die with the zygote,
    taking the keeper with it: both have a parent-death signal, which survives exec. As `sleep` it
    holds no copy of the interpreter's memory (a Python process here keeps 1.8 MB of its own). It
    executes `sleep` by the descriptor opened before the keeper was forked: the keeper may already
    have moved the mount namespace they share into the session's root, where the path is gone.
    Without a `sleep` binary it waits for the keeper and exits with its status.
    """
    if sleep >= 0:
        with contextlib.suppress(OSError):
            os.execve(sleep, ["codeact-session", "2147483647"], {})
    while True:
        try:
            _, status = os.waitpid(keeper, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue


def _proxy_listener() -> int:
    """Bring the namespace's loopback up and listen on the proxy port; returns the socket's fd."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH22s", b"lo", 0, b"")
        flags = struct.unpack("16sH22s", fcntl.ioctl(probe, siocgifflags, request))[1]
        fcntl.ioctl(probe, siocsifflags, struct.pack("16sH22s", b"lo", flags | iff_up, b""))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", PROXY_PORT))
    listener.listen(64)
    return listener.detach()


def scratch_dir(root_dir: str, number: int) -> str:
    """The private writable directory of a session that runs without a minimal root."""
    return os.path.join(root_dir, f"scratch-{number}")


def _python_paths(config: SessionConfig) -> list[str]:
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *config.python_paths]
    return [p for p in paths if os.path.isabs(p) and os.path.exists(p)]


def _set_rlimits(config: SessionConfig) -> None:
    limits = [
        (resource.RLIMIT_NOFILE, config.max_open_files),
        (resource.RLIMIT_FSIZE, config.max_file_size),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, config.pids_max),
    ]
    for which, value in limits:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(which, (value, value))


def _build_root(config: SessionConfig, root: str) -> None:
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4m,mode=0755")
    os.makedirs(root + "/tmp")
    # the private /tmp goes first so that granted paths under the host's /tmp are bound on top of it
    linux.mount("tmpfs", root + "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"size={config.tmp_size},mode=1777")
    # the session's user, so that Path.home() and getpass.getuser() answer: its home is the private /tmp
    os.makedirs(root + "/etc")
    _write(root + "/etc/passwd", f"sandbox:x:{os.getuid()}:{os.getgid()}:codeact sandbox:/tmp:/usr/sbin/nologin\n")
    _write(root + "/etc/group", f"sandbox:x:{os.getgid()}:\n")
    python_paths = _python_paths(config)
    binds: list[tuple[str, bool]] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            link = root + path
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.readlink(path), link)
        elif os.path.isdir(path):
            binds.append((path, False))
    binds += [(p, False) for p in python_paths]
    granted = {os.path.normpath(p) for p in [*config.read_paths, *config.write_paths]}
    binds += [(p, False) for p in config.read_paths + config.certificates]
    binds += [(p, True) for p in config.write_paths]
    scratch_cwd = _scratch_cwd(config)
    done: list[tuple[str, bool]] = []
    entries = {(os.path.normpath(p), w) for p, w in binds}
    if scratch_cwd:  # the host's working directory, as a private scratch dir: relative grants resolve
        entries.add((scratch_cwd, None))
    for path, writable in sorted(entries, key=lambda b: (b[0], b[1] is not None, bool(b[1]))):
        if writable is None:
            os.makedirs(root + path, exist_ok=True)
            linux.mount(
                "tmpfs", root + path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"size={config.tmp_size},mode=1777"
            )
            continue
        if any((path == d or path.startswith(d.rstrip("/") + "/")) and w == writable for d, w in done):
            continue
        _bind(root, path, writable, granted=path in granted)
        done.append((path, writable))
    for device in DEVICES:
        if os.path.exists(device):
            _bind(root, device, True)
    # POSIX semaphores and shared memory (multiprocessing's locks) live here; counted by the cgroup
    os.makedirs(root + "/dev/shm", exist_ok=True)
    linux.mount(
        "tmpfs",
        root + "/dev/shm",
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
        f"size={config.tmp_size},mode=1777",
    )
    os.makedirs(root + "/proc", exist_ok=True)
    try:
        linux.mount("proc", root + "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        _shield_proc(root)
    except OSError:
        pass  # without /proc inside, Python still runs
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    linux.mount_setattr(
        "/", linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV, recursive=False
    )
    try:  # the working directory mirrors the host's, so relative paths mean what they mean there
        if config.cwd.startswith("/tmp/"):
            os.makedirs(config.cwd, exist_ok=True)
        os.chdir(config.cwd if config.cwd != "/" else "/tmp")
    except OSError:
        os.chdir("/tmp")


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _scratch_cwd(config: SessionConfig) -> str | None:
    """The host's working directory when it needs a scratch mount of its own: not /, not under /tmp
    (the private /tmp holds it) and not inside a directory already bound in."""
    cwd = os.path.normpath(config.cwd or "/")
    if cwd == "/" or _inside(cwd, "/tmp"):
        return None
    bound = [*SYSTEM_PATHS, *_python_paths(config), *config.read_paths, *config.write_paths]
    if any(_inside(cwd, os.path.normpath(p)) for p in bound):
        return None
    return cwd


# The session's uid is the host user's, root when the host runs as root: kernel knobs under /proc
# would take its writes as root's. They are made read-only, and what leaks the host's state hidden.
PROC_READ_ONLY = ["sys", "sysrq-trigger", "irq", "bus", "fs"]
PROC_HIDDEN = ["kcore", "keys", "key-users", "timer_list", "sched_debug", "latency_stats", "kallsyms", "kmsg"]


def _shield_proc(root: str) -> None:
    proc = root + "/proc"
    blank = root + "/.blank"
    with open(blank, "w"):
        pass
    os.chmod(blank, 0o444)
    for name in PROC_READ_ONLY:
        path = f"{proc}/{name}"
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount_setattr(
                path, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV, recursive=True
            )
    for name in PROC_HIDDEN:
        path = f"{proc}/{name}"
        if os.path.isfile(path):
            linux.mount(blank, path, None, linux.MS_BIND)
            linux.mount_setattr(path, linux.MOUNT_ATTR_RDONLY, recursive=False)


class GrantError(RuntimeError):
    """A granted path cannot be bound as granted; the session must not start."""


def _bind(root: str, path: str, writable: bool, *, granted: bool = False) -> None:
    fd = None
    if granted:  # bind exactly what was granted: a link swapped in since the grant is refused
        try:
            fd = linux.open_path_no_symlinks(path)
        except OSError as exc:
            raise GrantError(
                f"granted path {path} cannot be opened without following a symbolic "
                f"link ({exc.strerror}); grant the real path instead"
            ) from None
        source = f"/proc/self/fd/{fd}"
    else:
        source = os.path.realpath(path)
    try:
        _bind_source(root, path, source, writable)
    finally:
        if fd is not None:
            os.close(fd)


def _bind_source(root: str, path: str, source: str, writable: bool) -> None:
    target = root + path
    if not os.path.lexists(target):
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w"):
                pass
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    attrs = linux.MOUNT_ATTR_NOSUID | (0 if writable else linux.MOUNT_ATTR_RDONLY)
    if not path.startswith("/dev/"):
        attrs |= linux.MOUNT_ATTR_NODEV
    linux.mount_setattr(target, attrs, recursive=True)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
