"""`SandboxOptions`: every sandbox setting, validated once, shared by every backend, the CLI and CodeAct.

A bad option fails here, before any session starts, with the option's name and what to write
instead. Sizes accept `512MB`, `2GiB`, `1.5G` or an int of bytes; a str where a list of paths is
expected is one path; relative paths are resolved against the working directory of the host.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import site
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from codeact.sandbox import packages
from codeact.sandbox.network import Rule

#: the directory of the codeact package
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MIN_MEMORY = 16 << 20


def parse_size(size: int | str | None, name: str = "size") -> int:
    """`512MB`, `2GiB`, `1.5G` (binary units) or an int of bytes; None is 0 (no limit)."""
    if size is None:
        return 0
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"{name} must be a size like '512MB' or an int of bytes, got {type(size).__name__}")
    if isinstance(size, int):
        if size < 0:
            raise ValueError(f"{name} must not be negative, got {size}")
        return size
    text = size.strip().upper().replace(" ", "").removesuffix("B").removesuffix("I")
    try:
        value = int(float(text[:-1]) * _UNITS[text[-1]]) if text and text[-1] in _UNITS else int(text)
    except ValueError:
        raise ValueError(f"cannot read {name}={size!r}; write it like '512MB', '2GiB' or '1.5G'") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {size!r}")
    return value


def _paths(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a path or a list of paths, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"{name} must hold paths, got {type(item).__name__} {item!r}")
        out.append(os.path.abspath(os.fspath(item)))
    return tuple(dict.fromkeys(out))


def granted_path(path: str | os.PathLike[str], kind: str) -> str:
    """An absolute path the user grants (`kind` is "read" or "write"), refused if it is missing or
    goes through a symbolic link, which an earlier session that could write there may have planted."""
    absolute = os.path.abspath(os.fspath(path))
    if not os.path.exists(absolute):
        raise ValueError(f"{kind} path {absolute} does not exist; create it first or remove it from {kind}_paths")
    real = os.path.realpath(absolute)
    if real != absolute:
        raise ValueError(
            f"{kind} path {absolute} goes through a symbolic link (to {real}); grant the real path instead"
        )
    return absolute


def positive(value: Any, name: str, kind: type = float) -> Any:
    """`value` as a positive `kind`; a TypeError or ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise TypeError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return kind(value)


@dataclass(frozen=True)
class SandboxOptions:
    """The settings of a sandbox session; build with `SandboxOptions.of(...)` or `SandboxOptions(...)`.

    backend: "auto" (native on Linux, else Pyodide), "process" or "pyodide".
    read_paths, write_paths: granted paths (a str is one path; relative ones resolve against the
        host's working directory, which the sandbox's working directory mirrors).
    env: environment variables inside. network: False (nothing), True (any public host) or a list
        of hosts like ["api.example.com", "*.github.com:443", "10.0.0.5:8080"], reached through an
        HTTP proxy on the host (see `codeact.sandbox.network`). hosts: names the proxy resolves to
        the given addresses instead of asking DNS (like curl's --resolve).
    timeout: seconds per step, host tool time included. memory_limit, max_file_size, tmp_size:
        sizes like "512MB" or ints of bytes. preload: modules imported once in the zygote.
    strict: refuse to start when an isolation layer is missing. max_output: characters of
        stdout/stderr kept per step. max_value_chars: characters of a step's value kept (head and
        tail). max_processes: processes per session. rollback: run each step in a fork so that the
        variables survive a step that dies. prefork: with rollback, fork the next step's process a
        few milliseconds after a step when the host sends nothing, so that step starts at once; False
        forks it when the next step comes, which saves a fork for each session closed after its last
        step (SandboxPool's default). packages: requirements pip installs on the host into a cache of
        their own (never the host's environment), mounted read-only on the import path.
    """

    backend: str = "auto"
    read_paths: tuple[str, ...] = ()
    write_paths: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool | tuple[str, ...] = False
    hosts: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    memory_limit: int = 1 << 30
    preload: tuple[str, ...] = ()
    strict: bool = False
    max_output: int = 1 << 20
    max_value_chars: int = 20_000
    max_processes: int = 64
    max_file_size: int = 256 << 20
    tmp_size: int = 256 << 20
    rollback: bool = True
    prefork: bool = True
    packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.backend not in ("auto", "process", "pyodide"):
            raise ValueError(f"unknown sandbox backend {self.backend!r}; choose 'auto', 'process' or 'pyodide'")
        set_(self, "read_paths", tuple(granted_path(p, "read") for p in _paths(self.read_paths, "read_paths")))
        set_(self, "write_paths", tuple(granted_path(p, "write") for p in _paths(self.write_paths, "write_paths")))
        if not isinstance(self.env, Mapping):
            raise TypeError(f"env must be a dict of names to values, got {type(self.env).__name__}")
        env = {}
        for key, value in self.env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ValueError(f"env: {key!r} is not a valid environment variable name")
            env[key] = str(value)
        set_(self, "env", env)
        if isinstance(self.network, str) or not isinstance(self.network, (bool, list, tuple, set, frozenset)):
            raise TypeError(
                f"network must be True, False or a list of hosts like ['api.example.com'], got {self.network!r}"
            )
        if not isinstance(self.network, bool):
            set_(self, "network", tuple(Rule.parse(entry).entry for entry in self.network))
        if not isinstance(self.hosts, Mapping):
            raise TypeError(f"hosts must be a dict of host names to addresses, got {type(self.hosts).__name__}")
        for name, address in self.hosts.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"hosts: {name!r} must map to an IP address, got {address!r}") from None
        set_(self, "hosts", {str(k).lower(): str(v) for k, v in self.hosts.items()})
        set_(self, "timeout", positive(self.timeout, "timeout"))
        memory = parse_size(self.memory_limit, "memory_limit")
        if 0 < memory < _MIN_MEMORY:
            raise ValueError(
                f"memory_limit={self.memory_limit!r} is {memory} bytes, too little for Python; "
                "write a size with its unit, like '512MB'"
            )
        set_(self, "memory_limit", memory)
        preload = (self.preload,) if isinstance(self.preload, str) else tuple(self.preload)
        if not all(isinstance(m, str) and m.replace(".", "_").isidentifier() for m in preload):
            raise ValueError(f"preload must name importable modules, got {self.preload!r}")
        set_(self, "preload", preload)
        for name in ("strict", "rollback", "prefork"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("max_output", "max_value_chars", "max_processes"):
            set_(self, name, positive(getattr(self, name), name, int))
        for name in ("max_file_size", "tmp_size"):
            value = parse_size(getattr(self, name), name)
            if value <= 0:
                raise ValueError(f"{name} must be a positive size like '256MB'")
            set_(self, name, value)
        packages = (self.packages,) if isinstance(self.packages, str) else tuple(self.packages)
        for requirement in packages:
            if not isinstance(requirement, str) or not requirement.strip() or requirement.lstrip().startswith("-"):
                raise ValueError(f"packages must be requirement strings like 'tabulate==0.9.*', got {requirement!r}")
        set_(self, "packages", tuple(r.strip() for r in packages))
        _check_write_paths(self.write_paths)

    @classmethod
    def of(cls, options: SandboxOptions | Mapping[str, Any] | None = None, **overrides: Any) -> SandboxOptions:
        """Options from another options object or a dict of them; unknown names raise."""
        if isinstance(options, SandboxOptions):
            base = {f.name: getattr(options, f.name) for f in fields(cls)}
        elif options is None:
            base = {}
        elif isinstance(options, Mapping):
            base = dict(options)
        else:
            raise TypeError(f"sandbox options must be a dict or SandboxOptions, got {type(options).__name__}")
        base.update(overrides)
        unknown = sorted(set(base) - NAMES)
        if unknown:
            raise ValueError(f"unknown sandbox option {unknown[0]!r}; the options are: {', '.join(sorted(NAMES))}")
        return cls(**base)

    def replace(self, **changes: Any) -> SandboxOptions:
        return dataclasses.replace(self, **changes)


NAMES = frozenset(f.name for f in fields(SandboxOptions))


def python_installation() -> list[str]:
    """What a session may see of the host by default: the Python installation, its site-packages
    and the directories that installed packages add to the import path (editable installs). Read
    again whenever a site-packages directory changed (a package was installed or removed)."""
    packages = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user, str):
        packages.add(user)
    return list(_installation(tuple(sorted((d, _mtime(d)) for d in packages))))


def _mtime(directory: str) -> int:
    try:
        return os.stat(directory).st_mtime_ns
    except OSError:
        return -1


@functools.lru_cache(maxsize=4)
def _installation(packages_seen: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    packages = {directory for directory, _ in packages_seen}
    added: set[str] = set()
    for directory in packages:
        added.update(_pth_paths(directory))
    found = [os.path.realpath(p) for p in [*roots, *packages, *added] if p and os.path.isabs(p)]
    return tuple(sorted({p for p in found if os.path.exists(p)}))


def _pth_paths(directory: str) -> list[str]:
    """Directories named by the `.pth` files of a site-packages directory."""
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".pth")]
    except OSError:
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            path = line if os.path.isabs(line) else os.path.join(directory, line)
            if os.path.isdir(path):
                out.append(path)
    return out


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def _check_write_paths(write_paths: Sequence[str]) -> None:
    """Refuse write grants that would let code plant modules the host imports later."""
    if not write_paths:
        return
    protected = {
        "the Python installation": [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)],
        "an import directory of the host": [os.path.realpath(p) for p in sys.path if p and os.path.isabs(p)]
        + python_installation(),
        "the codeact package": [PACKAGE_DIR],
        "the sandbox package cache": [os.path.realpath(packages.cache_root())],
    }
    for path in write_paths:
        real = os.path.realpath(path)
        for what, dirs in protected.items():
            for directory in dirs:
                if _inside(real, directory) or _inside(directory, real):
                    raise ValueError(
                        f"write path {path} overlaps {what} ({directory}): code could plant modules that the "
                        "host imports later; grant a directory outside it, or grant it read-only"
                    )
