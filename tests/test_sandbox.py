"""The sandbox, run for real: every test starts real processes under real limits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.execution.launch import SUPERVISOR
from orchestrator.execution.sandbox import (
    Sandbox,
    SandboxLimits,
    SandboxResult,
    sweep_stale_sandboxes,
)
from state.config import parse_config
from state.errors import ConfigError, SandboxError

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the uid drop needs root")
FAST = SandboxLimits(
    wall_timeout_s=10,
    cpu_s=5,
    memory_mb=512,
    max_processes=32,
    max_file_mb=8,
    max_output_bytes=16 * 1024,
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A small workspace in pytest's private temporary directory."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "data.txt").write_text("original\n")
    (ws / "pkg").mkdir()
    (ws / "pkg" / "mod.py").write_text("VALUE = 1\n")
    return ws


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A root-owned directory every user can enter and read, but not write (like /srv/x).

    It lies outside /tmp: each run's /tmp is private, so there the uid drop would go untested.
    """
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def marker() -> str:
    """A unique string to find the processes a test started."""
    return f"sandbox-marker-{uuid.uuid4().hex}"


def running_with(marker: str) -> list[int]:
    """The pids whose command line contains ``marker`` (in any PID namespace)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its mode and a digest of its content."""
    result = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        result[str(path.relative_to(root))] = f"{oct(info.st_mode)} {info.st_uid} {digest}"
    return result


async def run_python(
    sandbox: Sandbox, workspace: Path, code: str, *args: str, **kwargs: Any
) -> SandboxResult:
    """Run a Python snippet in the sandbox."""
    return await sandbox.run(
        workspace, [sys.executable, "-c", textwrap.dedent(code), *args], **kwargs
    )


async def test_command_sees_a_copy_and_exit_code_is_recorded(workspace: Path) -> None:
    """The command runs in a copy of the workspace; output and exit status are recorded."""
    result = await run_python(
        Sandbox(FAST),
        workspace,
        """
        import os, sys
        print(os.getcwd())
        print(open("data.txt").read().strip())
        sys.exit(3)
    """,
    )
    cwd, content = result.stdout.split()
    assert content == "original"
    assert Path(cwd) != workspace
    assert Path(cwd).name == "work"
    assert not await asyncio.to_thread(Path(cwd).exists), "the copy is removed after the run"
    assert result.exit_code == 3
    assert result.signal is None
    assert result.limit_hit is None
    assert not result.ok
    assert result.workdir is None
    assert result.duration_s > 0


@needs_root
async def test_code_cannot_change_anything_outside_its_copy(open_dir: Path) -> None:
    """Writes through absolute paths, .. and into parent-owned dirs fail; the copy is writable."""
    workspace = open_dir / "ws"
    workspace.mkdir(mode=0o755)
    (workspace / "data.txt").write_text("original\n")
    (workspace / "data.txt").chmod(0o644)
    parent_owned = open_dir / "results"
    parent_owned.mkdir(mode=0o755)
    before = snapshot(open_dir)
    result = await run_python(
        Sandbox(FAST),
        workspace,
        """
        import json, os, sys
        workspace, parent_owned = sys.argv[1], sys.argv[2]
        outcome = {}
        attempts = {
            "append_original": lambda: open(os.path.join(workspace, "data.txt"), "a").write("x"),
            "create_in_original": lambda: open(os.path.join(workspace, "new.py"), "w"),
            "delete_original": lambda: os.remove(os.path.join(workspace, "data.txt")),
            "chmod_original": lambda: os.chmod(workspace, 0o777),
            "parent_owned": lambda: open(os.path.join(parent_owned, "x.json"), "w"),
            "dotdot": lambda: open("../escaped.txt", "w"),
            "own_copy": lambda: open("data.txt", "a").write("changed in the copy"),
            "delete_in_copy": lambda: os.remove("data.txt"),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                outcome[name] = "ok"
            except OSError as exc:
                outcome[name] = type(exc).__name__
        print(json.dumps(outcome))
    """,
        str(workspace),
        str(parent_owned),
    )
    outcome = json.loads(result.stdout)
    assert outcome.pop("own_copy") == "ok"
    assert outcome.pop("delete_in_copy") == "ok"
    assert set(outcome.values()) == {"PermissionError"}, outcome
    assert snapshot(open_dir) == before
    assert "uid_drop" in result.isolation


async def test_parent_secrets_are_not_visible(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment is an allow-list: the parent's API keys are neither inherited nor read."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-test-must-not-leak")
    result = await run_python(
        Sandbox(FAST),
        workspace,
        """
        import json, os, sys
        try:
            with open(f"/proc/{sys.argv[1]}/environ", "rb") as f:
                parent = f.read().decode(errors="replace")
        except OSError as exc:
            parent = type(exc).__name__
        print(json.dumps({"env": dict(os.environ), "parent": parent}))
    """,
        str(os.getpid()),
    )
    seen = json.loads(result.stdout)
    assert "must-not-leak" not in result.stdout
    assert "OPENAI_API_KEY" not in seen["env"]
    assert "AWS_SECRET_ACCESS_KEY" not in seen["env"]
    assert set(seen["env"]) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "USER",
        "LOGNAME",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONHASHSEED",
        "NO_COLOR",
        "TERM",
        "MPLBACKEND",
        "LC_CTYPE",
    }
    assert seen["env"]["HOME"].startswith(str(Path(tempfile.gettempdir())))
    assert seen["parent"] in {"PermissionError", "FileNotFoundError", "ProcessLookupError"}


async def test_wall_timeout_kills_the_whole_process_tree(workspace: Path, marker: str) -> None:
    """An endless loop is killed at the wall timeout, with a descendant that left the session."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=2, cpu_s=30, memory_mb=512))
    result = await run_python(
        sandbox,
        workspace,
        """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)",
                          sys.argv[1]], start_new_session=True)
        while True:
            pass
    """,
        marker,
    )
    assert result.limit_hit == "wall_timeout"
    assert result.exit_code is None
    assert result.signal == signal.SIGKILL
    assert result.duration_s >= 2  # not stopped before its limit
    assert running_with(marker) == []


@needs_root
async def test_fallback_without_namespaces_still_contains_the_run(
    open_dir: Path, marker: str
) -> None:
    """Without namespaces the uid drop guards the files and the uid sweep kills escapees."""
    workspace = open_dir / "ws"
    workspace.mkdir(mode=0o755)
    (workspace / "data.txt").write_text("original\n")
    (workspace / "data.txt").chmod(0o644)
    sandbox = Sandbox(
        SandboxLimits(wall_timeout_s=2, cpu_s=30, memory_mb=512), use_namespaces=False
    )
    script = (
        f"setsid sh -c 'sleep 100; :' {marker} & "
        f"echo changed >> {workspace}/data.txt; echo changed >> data.txt; "
        "while :; do :; done"
    )
    result = await sandbox.run(workspace, ["sh", "-c", script])
    assert result.limit_hit == "wall_timeout"
    assert "Permission denied" in result.stderr
    assert not result.network_isolated
    assert "uid_drop" in result.isolation
    assert "pid_namespace" not in result.isolation
    assert "private_tmp" not in result.isolation
    assert any("/dev/shm are shared with the host" in note for note in result.notes)
    assert (workspace / "data.txt").read_text() == "original\n"
    assert running_with(marker) == []


async def test_cpu_limit_ends_a_busy_loop(workspace: Path) -> None:
    """A busy loop is stopped by RLIMIT_CPU long before the wall timeout, recorded as cpu."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=20, cpu_s=1, memory_mb=512))
    result = await run_python(sandbox, workspace, "while True: pass")
    assert result.limit_hit == "cpu"
    assert result.signal in {signal.SIGXCPU, signal.SIGKILL}
    assert result.cpu_s is not None
    assert result.cpu_s >= 0.9


async def test_memory_limit_stops_unbounded_allocation(workspace: Path) -> None:
    """Allocating without bound hits RLIMIT_AS and is recorded as memory."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=20, cpu_s=20, memory_mb=256))
    result = await run_python(
        sandbox,
        workspace,
        """
        chunks = []
        while True:
            chunks.append(bytearray(10_000_000))
    """,
    )
    assert result.limit_hit == "memory"
    assert result.exit_code == 1
    assert "MemoryError" in result.stderr


async def test_process_limit_caps_the_number_of_processes(workspace: Path, marker: str) -> None:
    """Forking without bound stops at max_processes and is recorded as processes."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=20, cpu_s=20, memory_mb=512, max_processes=12))
    result = await run_python(
        sandbox,
        workspace,
        """
        import os, sys, time
        forked = 0
        try:
            while forked < 500:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                forked += 1
        finally:
            print(forked, flush=True)
    """,
        marker,
    )
    assert result.limit_hit == "processes"
    assert 0 < int(result.stdout) < 12
    assert running_with(marker) == []


async def test_fork_bomb_is_contained_and_leaves_nothing(workspace: Path, marker: str) -> None:
    """An exponential fork bomb is held at the process limit, then killed with all its children."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=2, cpu_s=10, memory_mb=256, max_processes=24))
    result = await run_python(
        sandbox,
        workspace,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """,
        marker,
    )
    assert result.limit_hit == "wall_timeout"
    assert running_with(marker) == []
    after = await run_python(Sandbox(FAST), workspace, "print('still fine')")
    assert after.ok
    assert after.stdout == "still fine\n"


async def test_file_size_limit_stops_a_large_write(workspace: Path) -> None:
    """Writing a file over max_file_mb fails with EFBIG and is recorded as file_size."""
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=20, cpu_s=20, memory_mb=512, max_file_mb=1))
    result = await run_python(
        sandbox,
        workspace,
        """
        with open("big.bin", "wb") as f:
            f.write(b"x" * 4_000_000)
    """,
    )
    assert result.limit_hit == "file_size"
    assert result.exit_code == 1
    assert "File too large" in result.stderr


CONNECT = """
    import socket, sys
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
        print("connected")
    except OSError as exc:
        print(type(exc).__name__, exc.errno)
"""


@contextlib.contextmanager
def _listening_on_loopback() -> Iterator[int]:
    """A loopback port that listens and never accepts: the kernel completes a connect.

    No connection ever becomes an object in this process, so none is left to close.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_network_is_denied_when_isolation_is_available(workspace: Path) -> None:
    """Inside the sandbox even the parent's loopback port cannot be reached."""
    with _listening_on_loopback() as port:
        result = await run_python(Sandbox(FAST), workspace, CONNECT, str(port))
    if not result.network_isolated:
        pytest.skip("this platform cannot create network namespaces")
    assert "net_namespace" in result.isolation
    assert result.stdout.startswith("OSError"), result.stdout


async def test_network_can_be_allowed(workspace: Path) -> None:
    """With network=True the same connection succeeds (so the denial above is real)."""
    limits = SandboxLimits(wall_timeout_s=10, cpu_s=5, memory_mb=512, network=True)
    with _listening_on_loopback() as port:
        result = await run_python(Sandbox(limits), workspace, CONNECT, str(port))
    assert result.stdout == "connected\n"
    assert not result.network_isolated


async def test_output_is_truncated_with_a_note(workspace: Path) -> None:
    """Output beyond max_output_bytes keeps its head and tail and says what it dropped."""
    sandbox = Sandbox(
        SandboxLimits(wall_timeout_s=10, cpu_s=5, memory_mb=512, max_output_bytes=4096)
    )
    result = await run_python(
        sandbox,
        workspace,
        """
        print("FIRST")
        for i in range(100_000):
            print("line", i)
        print("LAST")
    """,
    )
    assert result.ok
    assert result.stdout.startswith("FIRST")
    assert result.stdout.endswith("LAST\n")
    assert "bytes truncated" in result.stdout
    assert len(result.stdout) < 4500


async def test_kept_workdir_and_collected_files(workspace: Path) -> None:
    """keep_workdir keeps the copy until discard; collect reads files back, not symlinks."""
    sandbox = Sandbox(FAST)
    result = await run_python(
        sandbox,
        workspace,
        """
        import os
        open("report.json", "w").write('{"ok": true}')
        os.symlink("/etc/hostname", "link.txt")
    """,
        keep_workdir=True,
        collect=("report.json", "link.txt", "absent.txt", "../x"),
    )
    assert result.ok
    assert dict(result.collected) == {"report.json": b'{"ok": true}'}
    assert result.workdir is not None
    assert (result.workdir / "report.json").is_file()
    await sandbox.discard(result)
    assert not result.workdir.exists()
    assert (workspace / "data.txt").read_text() == "original\n"
    assert not (workspace / "report.json").exists()


async def test_cancelling_a_run_kills_it(workspace: Path, marker: str) -> None:
    """A run whose task is cancelled leaves no process behind."""
    task = asyncio.create_task(
        run_python(Sandbox(FAST), workspace, "import time\nwhile True: time.sleep(1)", marker)
    )
    for _ in range(100):
        await asyncio.sleep(0.05)
        if running_with(marker):
            break
    assert running_with(marker), "the sandboxed command should have started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running_with(marker) == []


async def test_a_command_that_cannot_start_raises(workspace: Path) -> None:
    """A command that does not exist is a SandboxError, not a result."""
    with pytest.raises(SandboxError, match="does-not-exist"):
        await Sandbox(FAST).run(workspace, ["/nonexistent/does-not-exist"])


async def test_a_missing_workspace_raises(tmp_path: Path) -> None:
    """Sandboxing a directory that does not exist is a SandboxError."""
    with pytest.raises(SandboxError, match="not a directory"):
        await Sandbox(FAST).run(tmp_path / "missing", ["true"])


def test_limits_must_be_positive() -> None:
    """A zero or negative limit is a configuration error."""
    with pytest.raises(ConfigError, match="wall_timeout_s"):
        SandboxLimits(wall_timeout_s=0)
    with pytest.raises(ConfigError, match="max_processes"):
        SandboxLimits(max_processes=-1)


# --- lifetime, temp hygiene, reports and settings -------------------------------------------

PARENT = """
import asyncio, sys
from pathlib import Path
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.execution.tools import run_pytest

sandbox = Sandbox(SandboxLimits(wall_timeout_s=600, cpu_s=600))
asyncio.run(run_pytest(Path(sys.argv[1]), sandbox, python=sys.executable))
"""


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (zombies are dead: left out)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


async def poll(condition: object, seconds: float) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (checked every 50 ms)."""
    for _ in range(int(seconds / 0.05)):
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


async def test_killing_the_orchestrator_kills_the_sandboxed_tests(
    tmp_path: Path, marker: str
) -> None:
    """SIGKILL to the process running a validation leaves none of the sandboxed tree behind."""
    ws = tmp_path / "ws"
    (ws / "tests").mkdir(parents=True)
    (ws / "tests" / "test_forever.py").write_text(
        "import subprocess, sys, time\n\n\ndef test_forever():\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', "
        f"{marker!r}], start_new_session=True)\n"
        "    time.sleep(1000)\n"
    )
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", PARENT, str(ws))
    try:
        assert await poll(lambda: running_with(marker), 60), "the sandboxed tests never started"
        tree = descendants(parent.pid)
        assert len(tree) >= 3, tree  # the supervisor (and unshare), pytest, the sleeper
        parent.kill()
        await parent.wait()
        assert await poll(lambda: not (tree & descendants(1) or running_with(marker)), 10), (
            f"left running: {running_with(marker)}"
        )
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path: Path) -> None:
    """A dead pid's copy is swept; a live pid's and a foreign directory are kept."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"hybrid-sandbox-{int(gone.stdout)}-abc"
    (stale / "work").mkdir(parents=True)
    (stale / "work" / "left.py").write_text("x = 1\n")
    live = tmp_path / f"hybrid-sandbox-{os.getpid()}-def"
    live.mkdir()
    recycled = tmp_path / f"hybrid-sandbox-{os.getpid()}-ghi"  # our pid, another start time
    recycled.mkdir()
    (recycled / "owner").write_text(json.dumps({"pid": os.getpid(), "start": 1}))
    foreign = tmp_path / "hybrid-sandbox-q1w2e3"
    foreign.mkdir()
    assert sorted(sweep_stale_sandboxes(tmp_path)) == sorted([stale, recycled])
    assert not stale.exists()
    assert not recycled.exists()
    assert live.is_dir()
    assert foreign.is_dir()


async def test_a_run_directory_names_its_owner_and_is_removed(workspace: Path) -> None:
    """The copy's directory carries our pid (for the sweep) and is gone after the run."""
    sandbox = Sandbox(FAST)
    result = await run_python(sandbox, workspace, "print('hi')", keep_workdir=True)
    assert result.workdir is not None
    root = result.workdir.parent
    assert root.name.startswith(f"hybrid-sandbox-{os.getpid()}-")
    assert root not in await asyncio.to_thread(sweep_stale_sandboxes, root.parent)
    assert await asyncio.to_thread(root.is_dir), "a live owner's copy is not swept"
    await sandbox.discard(result)
    assert not await asyncio.to_thread(root.exists)


async def test_tmp_and_dev_shm_are_private_to_each_run(workspace: Path, marker: str) -> None:
    """Files the code writes to /tmp or /dev/shm are seen neither outside nor by the next run."""
    sandbox = Sandbox(FAST)
    write = f"""
        for d in ("/tmp", "/dev/shm"):
            open(f"{{d}}/{marker}", "w").write("left behind")
        print("written")
    """
    first = await run_python(sandbox, workspace, write)
    if "private_tmp" not in first.isolation:
        pytest.skip(f"no mount namespace here: {first.notes}")
    assert first.stdout.strip() == "written", first.stderr
    assert not await asyncio.to_thread(Path("/tmp", marker).exists)
    assert not await asyncio.to_thread(Path("/dev/shm", marker).exists)
    second = await run_python(
        sandbox,
        workspace,
        f"import os; print([os.path.exists(d + '/{marker}') for d in ('/tmp', '/dev/shm')])",
    )
    assert second.stdout.strip() == "[False, False]"


async def test_reports_come_from_descriptors_the_code_cannot_reach_by_path(
    workspace: Path,
) -> None:
    """A report is what the command wrote to its descriptor; a same-named workspace file is not."""
    (workspace / "out.json").write_text('{"forged": true}')
    result = await run_python(
        Sandbox(FAST),
        workspace,
        """
        import os, sys
        path = sys.argv[1]
        print(os.readlink(path))
        with open(path, "w") as f:
            f.write('{"real": true}')
        """,
        "{report:out}",
        reports=("out",),
    )
    assert result.ok, result.stderr
    assert dict(result.reports) == {"out": b'{"real": true}'}
    target = result.stdout.strip()
    assert target.endswith("(deleted)"), f"the report has a path the code could use: {target}"


def test_sandbox_limits_come_from_the_workflow_config() -> None:
    """The config's sandbox section sets every limit; a bad value is a ConfigError."""
    config = parse_config(
        {
            "sandbox": {
                "wall_seconds": 30,
                "memory_mb": 512,
                "max_processes": 16,
                "max_output_bytes": 4096,
            }
        }
    )
    limits = SandboxLimits.from_settings(config.sandbox)
    assert (limits.wall_timeout_s, limits.memory_mb, limits.max_processes) == (30, 512, 16)
    assert limits.max_output_bytes == 4096
    assert limits.network is False
    assert SandboxLimits.from_settings(parse_config(None).sandbox) == SandboxLimits()
    with pytest.raises(ConfigError, match="memory_mb"):
        parse_config({"sandbox": {"memory_mb": 0}})
    with pytest.raises(ConfigError, match="cpu"):
        parse_config({"sandbox": {"cpus": 2}})


def start_supervisor(
    argv: list[str], wall_timeout_s: float
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start supervisor.py by path, as the launcher does, without namespaces or a uid drop."""
    status_r, status_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    config = {
        "status_fd": status_w,
        "lifeline_fd": lifeline_r,
        "cwd": os.getcwd(),
        "uid": None,
        "expose": [],
        "rlimits": [],
        "wall_timeout_s": wall_timeout_s,
        "private_dirs": [],
    }
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(SUPERVISOR), json.dumps(config), *argv],
        pass_fds=(status_w, lifeline_r),
        start_new_session=True,
    )
    os.close(status_w)
    os.close(lifeline_r)
    return proc, status_r, lifeline_w


def supervisor_report(status_r: int) -> dict[str, object]:
    """The supervisor's last JSON line."""
    with os.fdopen(status_r, "rb") as status:
        lines = status.read().splitlines()
    return dict(json.loads(lines[-1]))


def test_the_supervisor_enforces_the_wall_clock_itself(marker: str) -> None:
    """Run as a file with nobody watching the clock, the supervisor kills the command in time."""
    proc, status_r, lifeline_w = start_supervisor(
        [sys.executable, "-c", "import time; time.sleep(1000)", marker], wall_timeout_s=1
    )
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(lifeline_w)
    report = supervisor_report(status_r)
    assert report["wall_timeout"] is True
    assert report["signal"] == signal.SIGKILL
    assert running_with(marker) == []


@pytest.mark.parametrize("when", ["at_once", "once_running"])
def test_the_supervisor_kills_the_run_when_the_lifeline_closes(marker: str, when: str) -> None:
    """Lifeline EOF (the orchestrator died) kills the run, even before its group is set up."""
    proc, status_r, lifeline_w = start_supervisor(
        [sys.executable, "-c", "import time; time.sleep(1000)", marker], wall_timeout_s=600
    )
    for _ in range(600 if when == "once_running" else 0):
        if len(running_with(marker)) >= 2:  # the supervisor's command line has it too
            break
        time.sleep(0.05)
    os.close(lifeline_w)
    assert proc.wait(timeout=30) == 0
    report = supervisor_report(status_r)
    assert report["orphaned"] is True
    assert report["wall_timeout"] is False
    assert running_with(marker) == []


FROM_TMP = """
import asyncio, sys
from pathlib import Path
from orchestrator.execution.sandbox import Sandbox, SandboxLimits

sandbox = Sandbox(SandboxLimits(wall_timeout_s=60, cpu_s=30))
command = [sys.executable, "-c", "import sys; print(sys.prefix)"]
result = asyncio.run(sandbox.run(Path(sys.argv[1]), command))
print("EXIT", result.exit_code, "PRIVATE", "private_tmp" in result.isolation)
print("OUT", result.stdout.strip())
print("ERR", result.stderr.strip()[-300:])
"""


def test_an_orchestrator_installed_under_tmp_still_runs_code_in_its_sandbox(
    tmp_path: Path, workspace: Path
) -> None:
    """With the orchestrator's virtualenv under /tmp (a CI checkout), the private /tmp keeps it."""
    venv = Path(tempfile.mkdtemp(prefix="orch-venv-", dir="/tmp"))
    venv.chmod(0o755)  # as a checkout is: readable by the sandbox's unprivileged user
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = [p for p in sys.path if p.endswith("site-packages")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *site])}
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", FROM_TMP, str(workspace)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
        if lines.get("EXIT", "").endswith("PRIVATE False"):
            pytest.skip("no mount namespace here: /tmp is not made private")
        assert lines["EXIT"] == "0 PRIVATE True", out.stdout
        assert lines["OUT"] == str(venv.resolve()), out.stdout
    finally:
        shutil.rmtree(venv, ignore_errors=True)
