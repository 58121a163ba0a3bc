"""Memory and process-count limits for a whole session, from a writable cgroup tree (v1 or v2)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

_V1 = "/sys/fs/cgroup"
TREE_PREFIX = "codeact-"  # a zygote's tree: codeact-<its pid>-<random>


@dataclass
class CgroupTree:
    """Where this zygote may create session cgroups: one directory per controller (v1) or one (v2)."""

    version: int
    memory_dir: str
    pids_dir: str

    @classmethod
    def detect(cls, tag: str) -> CgroupTree | None:
        """A writable tree with memory and pids control, with a `tag` directory made for us."""
        for found in (_detect_v1, _detect_v2):
            with contextlib.suppress(OSError):
                tree = found(tag)
                if tree is not None:
                    return tree
        return None

    def session(self, name: str) -> SessionCgroup:
        """A new, empty session cgroup; set its limits before its processes run code."""
        dirs = [os.path.join(self.memory_dir, name)]
        if self.pids_dir != self.memory_dir:
            dirs.append(os.path.join(self.pids_dir, name))
        group = SessionCgroup(self.version, dirs)
        try:
            for d in dirs:
                os.mkdir(d)
        except OSError:
            group.remove()
            raise
        return group

    def remove(self) -> None:
        for d in {self.memory_dir, self.pids_dir}:
            with contextlib.suppress(OSError):
                os.rmdir(d)

    def sweep(self, budget: int = 16) -> int:
        """Remove up to `budget` trees that zygotes which died without cleaning up left beside this one
        (a tree is named after its zygote's pid; the kernel refuses to remove a cgroup that still has
        processes). Returns how many it removed: 0 once none is left."""
        removed = 0
        for d in {self.memory_dir, self.pids_dir}:
            parent, own = os.path.split(d)
            with contextlib.suppress(OSError):
                for name in os.listdir(parent):
                    pid = name.split("-")[1] if name.startswith(TREE_PREFIX) and name != own else ""
                    if removed >= budget or not pid.isdigit() or _alive(int(pid)):
                        continue
                    tree = os.path.join(parent, name)
                    with contextlib.suppress(OSError):
                        for entry in os.scandir(tree):
                            if entry.is_dir(follow_symlinks=False):
                                with contextlib.suppress(OSError):
                                    os.rmdir(entry.path)
                        os.rmdir(tree)
                        removed += 1
        return removed


@dataclass
class SessionCgroup:
    version: int
    dirs: list[str] = field(default_factory=list)

    def set_limits(self, memory_bytes: int, pids_max: int) -> None:
        mem, pids = self.dirs[0], self.dirs[-1]
        if self.version == 1:
            _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), str(memory_bytes))
        else:
            _write(os.path.join(mem, "memory.max"), str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(os.path.join(mem, "memory.swap.max"), "0")
        _write(os.path.join(pids, "pids.max"), str(pids_max))

    def join(self) -> None:
        """Move the calling process in ("0": itself, whatever pid namespace it is in)."""
        for d in self.dirs:
            _write(os.path.join(d, "cgroup.procs"), "0")

    def remove(self) -> None:
        """Delete the session's directories, waiting briefly for its last processes to go."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _kill_all(d)
                    time.sleep(0.002)


def _kill_all(directory: str) -> None:
    with contextlib.suppress(OSError), open(os.path.join(directory, "cgroup.procs")) as f:
        for line in f:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(line), 9)


def oom_kills(memory_dir: str) -> int:
    """How many times the memory limit of the session cgroup `memory_dir` (v1 or v2) killed a process."""
    for name in ("memory.oom_control", "memory.events"):
        with contextlib.suppress(OSError), open(os.path.join(memory_dir, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == "oom_kill":
                    return int(parts[1])
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _detect_v1(tag: str) -> CgroupTree | None:
    mem, pids = os.path.join(_V1, "memory"), os.path.join(_V1, "pids")
    if not (os.path.isfile(os.path.join(mem, "memory.limit_in_bytes")) and os.path.isdir(pids)):
        return None
    if not (os.access(mem, os.W_OK) and os.access(pids, os.W_OK)):
        return None
    mem_tag, pids_tag = os.path.join(mem, tag), os.path.join(pids, tag)
    os.makedirs(mem_tag, exist_ok=True)
    os.makedirs(pids_tag, exist_ok=True)
    return CgroupTree(1, mem_tag, pids_tag)


def _detect_v2(tag: str) -> CgroupTree | None:
    root = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                root = left.split()[4]
                break
    if root is None:
        return None
    with open("/proc/self/cgroup") as f:
        own = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), "/")
    base = os.path.join(root, own.lstrip("/"))
    with open(os.path.join(base, "cgroup.controllers")) as f:
        controllers = f.read().split()
    if "memory" not in controllers or "pids" not in controllers or not os.access(base, os.W_OK):
        return None
    parent = os.path.join(base, tag)
    os.makedirs(parent, exist_ok=True)
    _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids")
    _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
    return CgroupTree(2, parent, parent)
