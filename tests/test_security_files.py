"""Attacks on the host's files: each must fail inside the sandbox and leave the host file untouched."""

from __future__ import annotations

import os
import platform
import shutil
import stat
import sys
import uuid
from pathlib import Path

import pytest

from attacks import assert_alive, assert_blocked, probe


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A secret file, a granted read directory and a granted write directory side by side."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE")
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "in.txt").write_text("readable")
    out = tmp_path / "out"
    out.mkdir()
    other = tmp_path / "not-granted"
    other.mkdir()
    return {"secret": secret, "granted": granted, "out": out, "other": other, "root": tmp_path}


def test_etc_shadow_and_passwd_are_unreadable(make_sandbox):
    assert os.path.exists("/etc/passwd"), "control: the host has /etc/passwd"
    host = Path("/etc/passwd").read_text()
    sb = make_sandbox()
    for path in ("/etc/shadow", "/etc/hostname"):
        outcome = probe(sb, f"return open({path!r}).read()")
        assert_blocked(outcome, f"read host {path}")
    # the sandbox may have a user list of its own (its one user): only the host's is a leak
    body = f"text = open('/etc/passwd').read()\nif text != {host!r}:\n    raise PermissionError(text)\nreturn text"
    assert_blocked(probe(sb, body), "read host /etc/passwd")
    assert_alive(sb)


def test_host_home_directory_is_unreadable(make_sandbox):
    home = Path.home()
    found = [home / n for n in (".bashrc", ".profile", ".gitconfig") if (home / n).is_file()]
    if not found:
        pytest.skip(f"no dotfile in {home} to aim at")
    target = found[0]
    target.read_bytes()  # control: the host can read it
    sb = make_sandbox()
    outcome = probe(sb, f"return open({str(target)!r}).read()")
    assert_blocked(outcome, f"read {target}")
    outcome = probe(
        sb,
        f"""
        import os
        names = os.listdir({str(home)!r})
        if {target.name!r} not in names:
            raise FileNotFoundError(names)
        return names
    """,
    )
    assert_blocked(outcome, f"list the host home {home}")
    assert_alive(sb)


def test_dotdot_from_a_read_path_does_not_reach_its_neighbour(make_sandbox, tree):
    sb = make_sandbox(read_paths=[tree["granted"]])
    control = probe(sb, f"return open({str(tree['granted'] / 'in.txt')!r}).read()")
    assert control.status == "ok" and "readable" in control.detail, f"control: the read path is readable: {control}"
    for path in (
        f"{tree['granted']}/../secret.txt",
        f"{tree['granted']}/../../{tree['root'].name}/secret.txt",
        f"{tree['granted']}/{'../' * 12}{str(tree['secret']).lstrip('/')}",
    ):
        assert_blocked(probe(sb, f"return open({path!r}).read()"), f"read {path}")
    assert_alive(sb)


def test_host_symlink_inside_a_read_path_does_not_lead_out(make_sandbox, tree):
    absolute = tree["granted"] / "abs-link"
    absolute.symlink_to(tree["secret"])
    relative = tree["granted"] / "rel-link"
    relative.symlink_to("../secret.txt")
    assert absolute.read_text() == relative.read_text() == "TOP-SECRET-FILE", "control: links work on the host"
    sb = make_sandbox(read_paths=[tree["granted"]])
    for link in (absolute, relative):
        outcome = probe(sb, f"return open({str(link)!r}).read()")
        assert_blocked(outcome, f"follow the host symlink {link.name} out of the read path")
    assert_alive(sb)


def test_symlink_made_inside_a_write_path_does_not_lead_out(make_sandbox, tree):
    sb = make_sandbox(write_paths=[tree["out"]])
    outcome = probe(
        sb,
        f"""
        import os
        link = {str(tree["out"] / "made-link")!r}
        os.symlink({str(tree["secret"])!r}, link)
        return open(link).read()
    """,
    )
    assert_blocked(outcome, "read the secret through a symlink made in a write path")
    outcome = probe(
        sb,
        f"""
        import os
        link = {str(tree["out"] / "root-link")!r}
        os.symlink("/proc/1/root/{str(tree["secret"]).lstrip("/")}", link)
        return open(link).read()
    """,
    )
    assert_blocked(outcome, "read the secret through a symlink to /proc/1/root")
    assert_alive(sb)


def test_hardlink_cannot_bring_outside_or_read_only_files_into_a_write_path(make_sandbox, tree):
    readonly = tree["granted"] / "in.txt"
    before = readonly.read_text()
    sb = make_sandbox(read_paths=[tree["granted"]], write_paths=[tree["out"]])
    outcome = probe(
        sb,
        f"""
        import os
        os.link({str(tree["secret"])!r}, {str(tree["out"] / "secret-link")!r})
        return open({str(tree["out"] / "secret-link")!r}).read()
    """,
    )
    assert_blocked(outcome, "hardlink the host secret into the write path")
    outcome = probe(
        sb,
        f"""
        import os
        link = {str(tree["out"] / "ro-link")!r}
        os.link({str(readonly)!r}, link)
        with open(link, "w") as f:
            f.write("OVERWRITTEN")
        return "linked and wrote"
    """,
    )
    assert_blocked(outcome, "hardlink a read-only file into the write path and write through it")
    assert readonly.read_text() == before, "the read-only host file was changed"
    assert not (tree["out"] / "secret-link").exists()
    assert_alive(sb)


def test_proc_root_and_cwd_links_do_not_lead_to_the_host(make_sandbox, tree):
    host_users = Path("/etc/passwd").read_text()[:40]
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import os
        hits = []
        pids = [p for p in os.listdir("/proc") if p.isdigit()] + ["self", "thread-self"]
        for pid in pids:
            for link in ("root", "cwd"):
                base = f"/proc/{{pid}}/{{link}}"
                for rel in ({str(tree["secret"]).lstrip("/")!r}, "etc/shadow", "etc/passwd"):
                    try:
                        with open(os.path.join(base, rel)) as f:
                            head = f.read(40)
                        if rel != "etc/passwd" or head == {host_users!r}:  # the sandbox's own user list is no leak
                            hits.append((base, rel, head))
                    except OSError:
                        pass
                for up in ("..", "../..", "/".join([".."] * 10)):
                    try:
                        names = os.listdir(os.path.join(base, up))
                    except OSError:
                        continue
                    if "var" in names or "home" in names or "boot" in names:  # the sandbox's root has an /etc
                        hits.append((base, up, sorted(names)))
        if not hits:
            raise PermissionError("nothing of the host reachable through /proc/*/root or cwd")
        return hits
    """,
    )
    assert_blocked(outcome, "reach host files through /proc/<pid>/root or /proc/<pid>/cwd")
    assert_alive(sb)


def test_chdir_dotdot_cannot_climb_out_of_the_root(make_sandbox):
    host_top = set(os.listdir("/"))
    assert {"var", "proc"} <= host_top, "control: the host root has /var"
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import os
        os.chdir("/tmp")
        for _ in range(40):
            os.chdir("..")
        names = os.listdir(".")
        if "var" not in names and "home" not in names and "boot" not in names:  # the sandbox has an /etc
            raise PermissionError(f"still inside the sandbox root: {sorted(names)}")
        return sorted(names)
    """,
    )
    assert_blocked(outcome, "climb above the sandbox root with chdir('..')")
    assert_alive(sb)


def test_cannot_write_outside_the_write_paths(make_sandbox, tree):
    name = f"pwned-{uuid.uuid4().hex}.txt"
    targets = [
        tree["other"] / name,
        tree["granted"] / name,
        Path("/etc") / name,
        Path("/usr/lib") / name,
        Path(sys.prefix) / name,
        Path("/") / name,
    ]
    sb = make_sandbox(read_paths=[tree["granted"]], write_paths=[tree["out"]])
    control = probe(
        sb,
        f"""
        with open({str(tree["out"] / "ok.txt")!r}, "w") as f:
            f.write("written")
        return "ok"
    """,
    )
    assert control.status == "ok", f"control: the write path is writable: {control}"
    assert (tree["out"] / "ok.txt").read_text() == "written", "control: the write reached the host"
    for target in targets:
        outcome = probe(
            sb,
            f"""
            with open({str(target)!r}, "w") as f:
                f.write("PWNED")
            return "wrote"
        """,
        )
        assert_blocked(outcome, f"write {target}")
        assert not target.exists(), f"the sandbox created {target} on the host"
    assert_alive(sb)


def test_read_paths_cannot_be_modified_renamed_or_deleted(make_sandbox, tree):
    target = tree["granted"] / "in.txt"
    stat_before = target.stat()
    sb = make_sandbox(read_paths=[tree["granted"]])
    attacks = {
        "overwrite": f"open({str(target)!r}, 'w').write('X')",
        "append": f"open({str(target)!r}, 'a').write('X')",
        "truncate": f"os.truncate({str(target)!r}, 0)",
        "unlink": f"os.unlink({str(target)!r})",
        "rename": f"os.rename({str(target)!r}, {str(tree['granted'] / 'moved.txt')!r})",
        "chmod": f"os.chmod({str(target)!r}, 0o777)",
        "utime": f"os.utime({str(target)!r}, (0, 0))",
        "create": f"open({str(tree['granted'] / 'new.txt')!r}, 'x').write('X')",
        "mkdir": f"os.mkdir({str(tree['granted'] / 'newdir')!r})",
    }
    for what, line in attacks.items():
        outcome = probe(sb, f"import os\n{line}\nreturn {what!r}")
        assert_blocked(outcome, f"{what} in a read path")
    after = target.stat()
    assert target.read_text() == "readable", "the read-only file's content changed"
    assert (after.st_mode, after.st_mtime_ns) == (stat_before.st_mode, stat_before.st_mtime_ns)
    assert sorted(p.name for p in tree["granted"].iterdir()) == ["in.txt"]
    assert_alive(sb)


def test_read_path_nested_in_a_write_path_stays_read_only(make_sandbox, tree):
    inner = tree["out"] / "reference"
    inner.mkdir()
    (inner / "data.txt").write_text("reference data")
    sb = make_sandbox(write_paths=[tree["out"]], read_paths=[inner])
    control = probe(sb, f"open({str(tree['out'] / 'note.txt')!r}, 'w').write('ok')\nreturn 'ok'")
    assert control.status == "ok", f"control: the write path is writable: {control}"
    outcome = probe(sb, f"open({str(inner / 'data.txt')!r}, 'w').write('CHANGED')\nreturn 'changed'")
    assert_blocked(outcome, "write a read path nested inside a write path")
    assert (inner / "data.txt").read_text() == "reference data"
    assert_alive(sb)


def test_cannot_plant_code_in_the_hosts_python(make_sandbox):
    import codeact

    package_init = Path(codeact.__file__)
    site_packages = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    before = package_init.read_bytes()
    name = f"zz_codeact_attack_{uuid.uuid4().hex}"
    sb = make_sandbox()
    for target, text in (
        (site_packages / f"{name}.pth", "import os; os.system('touch /tmp/pwned')"),
        (site_packages / "sitecustomize.py", "print('pwned')"),
        (site_packages / f"{name}.py", "print('pwned')"),
        (package_init, "raise SystemExit('pwned')"),
    ):
        outcome = probe(
            sb,
            f"""
            with open({str(target)!r}, "a") as f:
                f.write({text!r})
            return "planted"
        """,
        )
        assert_blocked(outcome, f"write {target}")
    assert package_init.read_bytes() == before, "the sandbox modified codeact/__init__.py on the host"
    assert not (site_packages / f"{name}.pth").exists()
    assert not (site_packages / f"{name}.py").exists()
    assert_alive(sb)


def test_tmp_is_private_to_each_session(make_sandbox):
    marker = f"codeact-attack-{uuid.uuid4().hex}"
    host_file = Path("/tmp") / f"{marker}-host"
    host_file.write_text("HOST-TMP-SECRET")
    try:
        first = make_sandbox()
        control = probe(first, f"open('/tmp/{marker}', 'w').write('x')\nreturn open('/tmp/{marker}').read()")
        assert control.status == "ok", f"control: /tmp is writable in the sandbox: {control}"
        assert not (Path("/tmp") / marker).exists(), "a file written to the sandbox's /tmp appeared on the host"
        assert_blocked(probe(first, f"return open({str(host_file)!r}).read()"), "read a host file in /tmp")
        second = make_sandbox()
        assert_blocked(probe(second, f"return open('/tmp/{marker}').read()"), "read another session's /tmp")
        assert_alive(first)
    finally:
        host_file.unlink()


def test_no_inherited_descriptor_opens_a_host_directory(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import os, stat
        hits = []
        for fd in range(0, 1024):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    hits.append((fd, sorted(os.listdir(fd))[:20]))
                except OSError as exc:
                    hits.append((fd, str(exc)))
            elif stat.S_ISREG(st.st_mode):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if not target.startswith("/memfd:"):  # the sandbox's own anonymous capture files
                    hits.append((fd, target))
        if not hits:
            raise LookupError("no directory or file descriptor leaked into the sandbox")
        return hits
    """,
    )
    assert_blocked(outcome, "use a directory or file descriptor leaked from the host or zygote")
    assert_alive(sb)


def test_setuid_programs_cannot_be_planted_in_a_write_path(make_sandbox, tree):
    # The session's uid maps to the host user (root here): a setuid copy of Python left in a
    # write path would let anyone on the host who reaches that directory run code as that user.
    sb = make_sandbox(write_paths=[tree["out"]])
    out = str(tree["out"])
    probe(
        sb,
        f"""
        import os, shutil, sys
        shutil.copyfile(sys.executable, {out!r} + "/suid-python")
        os.chmod({out!r} + "/suid-python", 0o4755)
        return "chmod done"
    """,
    )
    probe(
        sb,
        f"""
        import os
        os.close(os.open({out!r} + "/created-setuid", os.O_CREAT | os.O_WRONLY, 0o6755))
        os.mkdir({out!r} + "/setgid-dir", 0o2777)
        os.chmod({out!r} + "/setgid-dir", 0o2777)
        return "created"
    """,
    )
    flagged = {
        p.name: oct(p.stat().st_mode) for p in tree["out"].iterdir() if p.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    }
    assert not flagged, f"ATTACK SUCCEEDED: the sandbox left setuid/setgid files on the host: {flagged}"
    assert_alive(sb)


def test_file_capabilities_cannot_be_set_in_a_write_path(make_sandbox, tree):
    sb = make_sandbox(write_paths=[tree["out"]])
    target = str(tree["out"] / "capable")
    # VFS_CAP_REVISION_2 with every permitted and effective bit set
    blob = (0x02000001).to_bytes(4, "little") + (0xFFFFFFFF).to_bytes(4, "little") * 4
    outcome = probe(
        sb,
        f"""
        import os
        open({target!r}, "w").close()
        os.setxattr({target!r}, "security.capability", {blob!r})
        return os.getxattr({target!r}, "security.capability")
    """,
    )
    assert_blocked(outcome, "set file capabilities on a file in the write path")
    try:
        value = os.getxattr(target, "security.capability")
    except OSError:
        value = None
    assert value is None, f"the host file {target} now carries capabilities {value!r}"
    assert_alive(sb)


def test_symlink_planted_by_one_session_does_not_redirect_a_later_grant(make_sandbox, tree, backend):
    # A first task may write anything into its write path, symlinks included. When a later task is
    # granted a sub-path of that directory, the grant must not follow a link out to a host directory.
    private = tree["root"] / "private"
    private.mkdir()
    (private / "key.txt").write_text("HOST-PRIVATE-KEY")
    first = make_sandbox(write_paths=[tree["out"]])
    planted = probe(
        first,
        f"""
        import os
        os.symlink({str(private)!r}, {str(tree["out"] / "results")!r})
        return "planted"
    """,
    )
    if backend == "pyodide" and planted.status != "ok":
        # pyodide: Deno refuses symlinks without full read and write permission; plant it from the host
        os.symlink(private, tree["out"] / "results")
    else:
        assert planted.status == "ok", f"control: a session can make symlinks in its write path: {planted}"
    for grant in ("read_paths", "write_paths"):
        try:
            second = make_sandbox(**{grant: [tree["out"] / "results"]})
        except (ValueError, OSError, RuntimeError) as exc:  # refusing the grant is a fine answer
            assert "symlink" in str(exc) or "link" in str(exc), f"refused without saying why: {exc}"
            continue
        outcome = probe(second, f"return open({str(tree['out'] / 'results' / 'key.txt')!r}).read()")
        assert_blocked(outcome, f"read a host file through a symlink planted earlier and a later {grant} grant")
        outcome = probe(
            second,
            f"""
            open({str(tree["out"] / "results" / "planted.txt")!r}, "w").write("x")
            return "written"
        """,
        )
        assert_blocked(outcome, f"write a host directory through a planted symlink and a later {grant} grant")
        assert not (private / "planted.txt").exists(), "a later session wrote into the linked host directory"


def test_a_granted_file_does_not_expose_its_directory(make_sandbox, tree):
    granted_file = tree["granted"] / "in.txt"
    (tree["granted"] / "sibling.txt").write_text("SIBLING-SECRET")
    sb = make_sandbox(read_paths=[granted_file])
    control = probe(sb, f"return open({str(granted_file)!r}).read()")
    assert control.status == "ok" and "readable" in control.detail, f"control: the file is readable: {control}"
    outcome = probe(sb, f"return open({str(tree['granted'] / 'sibling.txt')!r}).read()")
    assert_blocked(outcome, "read a sibling of a granted file")
    assert_alive(sb)


def _swap_setup(make_sandbox, tree):
    """A host directory with a key, a granted directory `data`, and a session that can swap `data`
    for a link to the key's directory (it may write the parent)."""
    private = tree["root"] / "private"
    private.mkdir()
    (private / "key.txt").write_text("HOST-PRIVATE-KEY")
    data = tree["out"] / "data"
    data.mkdir()
    swapper = make_sandbox(write_paths=[tree["out"]])

    def swap() -> None:
        outcome = probe(
            swapper,
            f"""
            import os, shutil
            shutil.rmtree({str(data)!r})
            os.symlink({str(private)!r}, {str(data)!r})
            return "swapped"
        """,
        )
        if outcome.status != "ok" and swapper.backend.name == "pyodide":
            # pyodide: Deno refuses symlinks to a session; the swap is made from the host instead
            if data.is_dir() and not data.is_symlink():
                shutil.rmtree(data)
            os.symlink(private, data)
            return
        assert outcome.status == "ok", f"control: the other session can swap the directory: {outcome}"

    return data, swap


def test_grant_swapped_for_a_symlink_before_start_is_not_followed(make_sandbox, backend, tree):
    # The grant is checked when the Sandbox is made; it starts after another session swapped it.
    from codeact import Sandbox

    data, swap = _swap_setup(make_sandbox, tree)
    late = Sandbox(read_paths=[data], backend=backend)
    try:
        swap()
        try:
            late.start()
        except (ValueError, OSError, RuntimeError) as exc:  # refusing to start is a fine answer
            assert "link" in str(exc), exc
            return
        outcome = probe(late, f"return open({str(data / 'key.txt')!r}).read()")
        assert_blocked(outcome, "read a host directory through a grant swapped for a link before start")
    finally:
        late.close()


def test_grant_swapped_for_a_symlink_before_a_restart_is_not_followed(make_sandbox, backend, tree):
    # Started while the grant was a real directory; the session is restarted after the swap.
    if backend != "process":
        pytest.skip("restarts a native session through a broken frame")
    from attacks import FIND_CHANNEL

    data, swap = _swap_setup(make_sandbox, tree)
    victim = make_sandbox(read_paths=[data])
    assert victim.execute("1").error is None
    swap()
    broken = victim.execute(FIND_CHANNEL + "\n__channel().sendall(b'\\xff\\xff\\xff\\xff')\nimport time\ntime.sleep(5)")
    assert broken.error is not None, "control: a broken frame ends the session"
    try:
        outcome = probe(victim, f"return open({str(data / 'key.txt')!r}).read()")
    except (ValueError, OSError, RuntimeError) as exc:  # refusing to restart is a fine answer
        assert "link" in str(exc), exc
        return
    assert_blocked(outcome, "read a host directory through a grant swapped for a link before a restart")


@pytest.mark.parametrize(
    "call",
    [
        "libc.syscall(90, path, 0o4755)",  # chmod
        "libc.syscall(268, -100, path, 0o4755, 0)",  # fchmodat
        "libc.syscall(452, -100, path, 0o4755, 0)",  # fchmodat2 (Linux 6.6+)
        "libc.syscall(91, os.open(path, os.O_RDONLY), 0o2755)",  # fchmod, setgid
        "libc.syscall(85, path + b'-new', 0o4755)",  # creat
        "libc.syscall(257, -100, path + b'-new', 0o101, 0o4755)",  # openat(O_CREAT | O_WRONLY)
        "libc.syscall(259, -100, path + b'-new', 0o100000 | 0o4755, 0)",  # mknodat a regular file
        "libc.syscall(258, -100, path + b'-dir', 0o2777)",  # mkdirat, setgid
    ],
)
def test_setuid_bits_cannot_be_set_by_any_system_call(make_sandbox, tree, call, backend):
    if platform.machine() != "x86_64":
        pytest.skip("raw x86_64 system call numbers")
    if backend == "pyodide":
        pytest.skip("pyodide: WebAssembly has no raw Linux system calls (the chmod paths are tested above)")
    sb = make_sandbox(write_paths=[tree["out"]])
    program = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        path = {path!r}.encode()
        open(path, "w").close()
        if {call} < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return "called"
    """
    plain = call.replace("0o4755", "0o755").replace("0o2755", "0o755").replace("0o2777", "0o777")
    control = probe(sb, program.format(path=str(tree["out"] / "plain"), call=plain))
    assert control.status == "ok", f"control: the same call without setuid bits works: {control}"
    probe(sb, program.format(path=str(tree["out"] / "target"), call=call))
    flagged = {
        p.name: oct(p.stat().st_mode) for p in tree["out"].iterdir() if p.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    }
    assert not flagged, f"ATTACK SUCCEEDED: {call} left setuid/setgid files on the host: {flagged}"
    assert_alive(sb)
