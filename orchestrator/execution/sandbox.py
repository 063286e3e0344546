"""Run generated code in a sandbox: a throw-away copy of the workspace, with limits.

Each :meth:`Sandbox.run` copies the workspace into a fresh temporary directory, runs one
command there and removes the copy. The command runs under a small supervisor process,
started as ``[unshare ...] python -I -S -c <supervisor> <config> argv...``, which applies the
limits, runs the command as its child, records how it ended and kills whatever it left.

What a run guarantees on Linux as root with namespaces (the production setup):

- **The workspace is never modified.** The code runs in the copy, as an unprivileged uid
  picked for this run alone; that uid owns only the copy, its HOME and its TMPDIR, so it cannot
  write the original workspace or any directory the orchestrator owns, whatever path it uses.
- **No secrets.** The environment is a short allow-list (PATH, HOME and TMPDIR inside the
  sandbox, LANG, PYTHONDONTWRITEBYTECODE, ...): never OPENAI_API_KEY or anything else the
  parent holds. ``/proc`` is remounted for a new PID namespace, so the parent's
  ``/proc/<pid>/environ`` is out of sight (and out of reach of another uid anyway).
- **Limits.** A wall-clock timeout kills the whole process tree; RLIMIT_CPU, RLIMIT_AS
  (memory), RLIMIT_NPROC (processes and threads: the uid is the run's own, so the count is
  the sandbox's alone), RLIMIT_FSIZE (largest file) and no core files. How the run ended is
  recorded in :attr:`SandboxResult.limit_hit`.
- **Nothing survives the run.** The command is PID 1's child in a new PID namespace that dies
  with the supervisor (``unshare --pid --fork --kill-child``); the supervisor also kills every
  process of the run's uid and every descendant that was re-parented to it.
- **No network.** A new network namespace has only a loopback interface, and it is down:
  even 127.0.0.1 is unreachable. :attr:`SandboxResult.network_isolated` says whether it applied.
- When the interpreter lives under a directory other users cannot enter (pyenv under a 0700
  ``/root``), the supervisor hides that directory behind an empty tmpfs in the run's private
  mount namespace and bind-mounts only the interpreter's prefixes back, read-only.

What it cannot guarantee elsewhere:

- Without ``unshare`` (no root and no user namespaces, or not Linux): no network isolation
  (recorded), no PID namespace: a descendant that starts its own session can outlive the run
  unless the uid sweep applies (root only).
- Not root: the code runs as the orchestrator's own user, so it can write (and read) wherever
  that user can, including the original workspace by absolute path; only the environment is
  cleaned. RLIMIT_NPROC then counts all of that user's processes (the limit is raised by the
  number already running), unless a user namespace gives the run its own count.
- Always: world-writable places (``/tmp``, ``/dev/shm``) stay writable and world-readable files
  stay readable; RLIMIT_CPU and RLIMIT_AS apply per process, not to the tree; RLIMIT_AS counts
  address space, so runtimes that reserve much of it need a generous ``memory_mb``. A limit is
  recognised from the exit signal or from the error the program printed last, which is a
  heuristic for programs that catch and rephrase their errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import inspect
import json
import os
import re
import resource
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Any, Literal

from state.errors import ConfigError, SandboxError

LimitHit = Literal["wall_timeout", "cpu", "memory", "processes", "file_size"]
"""Which limit ended a run."""

# Far above regular users (1000-60000), nobody (65534) and systemd's container range; each run
# draws its own uid so that RLIMIT_NPROC and the final kill sweep see that run's processes only.
_UID_BASE = 2_000_000_000
_UID_POOL = 65_536
# Not copied into the sandbox: version control, caches and virtual environments.
_COPY_IGNORE = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "node_modules",
        ".ipynb_checkpoints",
    }
)
_TERMINATE_GRACE_S = 3.0  # after SIGTERM, how long the supervisor gets to clean up
_PIPE_DRAIN_S = 2.0  # after exit, how long to wait for output still in the pipes
_COLLECT_MAX_BYTES = 16 * 1024 * 1024
_MEMORY_RE = re.compile(
    r"^\S*MemoryError\b|Cannot allocate memory|std::bad_alloc|[Oo]ut of memory|Unable to allocate",
    re.MULTILINE,
)
_PROCESSES_RE = re.compile(
    r"^\S*BlockingIOError: \[Errno 11\]|can't start new thread|"
    r"fork: (?:retry: )?Resource temporarily unavailable",
    re.MULTILINE,
)
_FILE_SIZE_RE = re.compile(r"File too large")


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    Attributes:
        wall_timeout_s: wall-clock seconds before the whole process tree is killed.
        cpu_s: CPU seconds per process (RLIMIT_CPU).
        memory_mb: address space per process in MiB (RLIMIT_AS).
        max_processes: processes and threads of the run (RLIMIT_NPROC).
        max_file_mb: largest file the code may write, in MiB (RLIMIT_FSIZE).
        max_output_bytes: bytes kept of stdout and of stderr each (the head and the tail).
        network: allow network access (no network namespace) when True.
    """

    wall_timeout_s: float = 120.0
    cpu_s: int = 120
    memory_mb: int = 2048
    max_processes: int = 128
    max_file_mb: int = 256
    max_output_bytes: int = 64 * 1024
    network: bool = False

    def __post_init__(self) -> None:
        """Reject limits that cannot be applied."""
        for name in ("wall_timeout_s", "cpu_s", "memory_mb", "max_processes", "max_file_mb"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"sandbox limit {name} must be positive, got "
                    f"{getattr(self, name)!r}; fix the workflow's sandbox limits"
                )
        if self.max_output_bytes < 1024:
            raise ConfigError(
                f"sandbox limit max_output_bytes must be at least 1024, got "
                f"{self.max_output_bytes}; fix the workflow's sandbox limits"
            )


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How one sandboxed run ended.

    Attributes:
        argv: the command that ran.
        exit_code: its exit status, or None when a signal ended it.
        signal: the signal that ended it, or None.
        stdout: what it printed (head and tail, with a note where bytes were dropped).
        stderr: the same for stderr.
        duration_s: wall-clock seconds.
        limit_hit: the limit that ended the run, or None.
        network_isolated: whether the run had no network (a new network namespace).
        isolation: the mechanisms that applied, e.g. ``("pid_namespace", "uid_drop", ...)``.
        cpu_s: CPU seconds of the command and the descendants it waited for, when known.
        workdir: the workspace copy when the run kept it (see :meth:`Sandbox.discard`).
        collected: the files asked for with ``collect`` that the run left, by relative path.
    """

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    duration_s: float
    limit_hit: LimitHit | None
    network_isolated: bool
    isolation: tuple[str, ...] = ()
    cpu_s: float | None = None
    workdir: Path | None = None
    collected: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0 within every limit."""
        return self.exit_code == 0 and self.limit_hit is None


@dataclass(frozen=True, slots=True)
class _Isolation:
    """What this machine allows, probed once per sandbox."""

    drop_uid: bool  # we are root: each run gets its own unprivileged uid
    with_net: tuple[str, ...] | None  # unshare prefix with a network namespace
    without_net: tuple[str, ...] | None  # unshare prefix without one


@dataclass(frozen=True, slots=True)
class _Layout:
    """The temporary directories of one run."""

    root: Path
    work: Path
    home: Path
    tmp: Path


class Sandbox:
    """Runs commands over a temporary copy of a workspace, within limits.

    Args:
        limits: the limits of every run.
        temp_root: where the temporary copies go (default: the system's temporary directory);
            when running as root it must be enterable by other users.
        use_namespaces: create Linux namespaces where the platform allows; False runs the
            portable fallback (uid drop, rlimits, kill sweeps) everywhere.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        temp_root: Path | None = None,
        use_namespaces: bool = True,
    ) -> None:
        self._limits = limits if limits is not None else SandboxLimits()
        self._temp_root = temp_root
        self._use_namespaces = use_namespaces
        self._isolation: _Isolation | None = None

    @property
    def limits(self) -> SandboxLimits:
        """The limits every run gets."""
        return self._limits

    async def run(
        self,
        workspace: Path,
        argv: Sequence[str],
        *,
        keep_workdir: bool = False,
        env: Mapping[str, str] | None = None,
        collect: Sequence[str] = (),
    ) -> SandboxResult:
        """Run ``argv`` in a fresh copy of ``workspace`` and record how it ended.

        Args:
            workspace: the directory to copy; it is only read.
            argv: the command; ``argv[0]`` is looked up on the sandbox's PATH (the
                orchestrator's interpreter directory first, then the system's).
            keep_workdir: keep the copy and return it in ``workdir``; release it with
                :meth:`discard`.
            env: extra environment variables for the command, on top of the allow-list.
            collect: relative paths of files to read back from the copy after the run.

        Returns:
            The result; a limit being hit is a result, not an error.

        Raises:
            SandboxError: the workspace could not be copied or the command could not be
                started (not found, not executable, the platform refused a limit).
        """
        if not argv:
            raise SandboxError("nothing to run in the sandbox: argv is empty")
        if not await asyncio.to_thread(workspace.is_dir):
            raise SandboxError(f"cannot sandbox workspace {workspace}: it is not a directory")
        isolation = await self._probe()
        prefix = isolation.without_net if self._limits.network else isolation.with_net
        if prefix is None:
            prefix = isolation.without_net
        uid = _UID_BASE + secrets.randbelow(_UID_POOL) if isolation.drop_uid else None
        temp_root = self._temp_root or Path(tempfile.gettempdir())
        expose, hint = (
            self._check_reachable(temp_root, has_mount_ns=prefix is not None)
            if uid is not None
            else ([], "")
        )
        layout = await self._prepare(workspace, temp_root, uid)
        keep = False
        try:
            result = await self._execute(
                layout, tuple(argv), prefix or (), uid, expose, env or {}, collect, hint
            )
            keep = keep_workdir
        finally:
            if not keep:
                await asyncio.to_thread(_remove_tree, layout.root)
        return result if keep else dataclasses.replace(result, workdir=None)

    async def discard(self, result: SandboxResult) -> None:
        """Remove a workspace copy kept with ``keep_workdir=True`` (no-op without one)."""
        if result.workdir is not None:
            await asyncio.to_thread(_remove_tree, result.workdir.parent)

    # --- setting up ------------------------------------------------------------------------

    async def _probe(self) -> _Isolation:
        """Find out once which namespaces this machine lets us create."""
        if self._isolation is None:
            self._isolation = (
                await _probe_isolation()
                if self._use_namespaces
                else _Isolation(drop_uid=os.geteuid() == 0, with_net=None, without_net=None)
            )
        return self._isolation

    def _check_reachable(
        self, temp_root: Path, *, has_mount_ns: bool
    ) -> tuple[list[list[Any]], str]:
        """Check that an unprivileged uid can reach the copies and the interpreter.

        Returns:
            ``[[blocking_dir, [prefix, ...]], ...]``, the interpreter prefixes to bind-mount
            back into the run's mount namespace behind a tmpfs over the blocking directory,
            and, when that cannot be done, a hint for the error should the command need them.
        """
        blocker = _first_blocker(temp_root.resolve(), include_self=True)
        if blocker is not None:
            raise SandboxError(
                f"the sandbox's temporary directory {temp_root} lies under "
                f"{blocker}, which other users cannot enter; pass a temp_root "
                "such as /tmp to Sandbox"
            )
        prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)})
        prefixes = [
            p for p in prefixes if not any(p != q and p.startswith(q + os.sep) for q in prefixes)
        ]
        groups: dict[str, list[str]] = {}
        for prefix in prefixes:
            blocked = _first_blocker(Path(prefix))
            if blocked is not None:
                groups.setdefault(str(blocked), []).append(prefix)
        if groups and not has_mount_ns:
            return [], (
                f" (the interpreter {sys.executable} lies under {', '.join(groups)}, "
                "which the sandbox's unprivileged user cannot enter, and no mount "
                "namespace is available to expose it; install Python where every "
                "user can read it)"
            )
        return [[blocked, paths] for blocked, paths in groups.items()], ""

    async def _prepare(self, workspace: Path, temp_root: Path, uid: int | None) -> _Layout:
        """Copy the workspace into a new temporary directory owned by ``uid``."""
        try:
            return await asyncio.to_thread(_make_layout, workspace, temp_root, uid)
        except (OSError, shutil.Error) as exc:
            raise SandboxError(
                f"could not copy workspace {workspace} into the sandbox: "
                f"{exc}; check that it is readable and the disk has room"
            ) from exc

    # --- running ---------------------------------------------------------------------------

    async def _execute(
        self,
        layout: _Layout,
        argv: tuple[str, ...],
        prefix: tuple[str, ...],
        uid: int | None,
        expose: list[list[Any]],
        extra_env: Mapping[str, str],
        collect: Sequence[str],
        hint: str,
    ) -> SandboxResult:
        """Start the supervisor, enforce the wall timeout and collect the outcome."""
        limits = self._limits
        read_fd, write_fd = os.pipe()
        config = {
            "status_fd": write_fd,
            "cwd": str(layout.work),
            "uid": uid,
            "expose": expose,
            "rlimits": _rlimits(limits, uid, prefix),
        }
        command = [
            *prefix,
            sys.executable,
            "-I",
            "-S",
            "-c",
            _supervisor_source(),
            json.dumps(config),
            *argv,
        ]
        out = _Capture(limits.max_output_bytes)
        err = _Capture(limits.max_output_bytes)
        started = time.monotonic()
        timed_out = False
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=layout.work,
                    env=_environment(layout, extra_env),
                    start_new_session=True,
                    pass_fds=(write_fd,),
                )
            except OSError as exc:
                raise SandboxError(f"could not start the sandbox for {argv[0]}: {exc}") from exc
            finally:
                os.close(write_fd)
            assert proc.stdout is not None
            assert proc.stderr is not None
            pumps = {
                asyncio.create_task(_pump(proc.stdout, out)),
                asyncio.create_task(_pump(proc.stderr, err)),
            }
            try:
                await asyncio.wait_for(proc.wait(), limits.wall_timeout_s)
            except TimeoutError:
                timed_out = True
                await _terminate(proc)
            finally:
                if proc.returncode is None:  # cancelled: leave nothing behind
                    _signal_group(proc.pid, signal.SIGKILL)
                    await proc.wait()
                _, pending = await asyncio.wait(pumps, timeout=_PIPE_DRAIN_S)
                for task in pending:
                    task.cancel()
            duration = time.monotonic() - started
            status = _read_status(read_fd)
        finally:
            os.close(read_fd)
            if uid is not None and "--pid" not in prefix:
                await _kill_uid(uid)  # no namespace dies with the supervisor: sweep the uid
        if "setup_error" in status:
            raise SandboxError(
                f"could not run {argv[0]!r} in the sandbox: {status['setup_error']}{hint}"
            )
        if "exit_code" not in status and not timed_out:
            # The supervisor died before reporting: show why instead of guessing.
            raise SandboxError(
                f"the sandbox supervisor failed (exit {proc.returncode}): {_tail(err.text(), 2000)}"
            )
        return _result(
            limits,
            argv,
            prefix,
            uid,
            status,
            proc.returncode,
            timed_out,
            out.text(),
            err.text(),
            duration,
            layout,
            collect,
        )


def _result(
    limits: SandboxLimits,
    argv: tuple[str, ...],
    prefix: tuple[str, ...],
    uid: int | None,
    status: dict[str, Any],
    returncode: int | None,
    timed_out: bool,
    stdout: str,
    stderr: str,
    duration: float,
    layout: _Layout,
    collect: Sequence[str],
) -> SandboxResult:
    """Put together the result of a finished run."""
    if "exit_code" in status:
        exit_code: int | None = status["exit_code"]
        signum: int | None = status["signal"]
    elif returncode is not None and returncode < 0:
        exit_code, signum = None, -returncode
    else:
        exit_code, signum = returncode, None
    cpu_s: float | None = status.get("cpu_s")
    isolation = [
        name
        for flag, name in (
            ("--user", "user_namespace"),
            ("--pid", "pid_namespace"),
            ("--mount-proc", "mount_namespace"),
            ("--net", "net_namespace"),
        )
        if flag in prefix
    ]
    if uid is not None:
        isolation.append("uid_drop")
    isolation += ["rlimits", "env_allowlist"]
    return SandboxResult(
        argv=argv,
        exit_code=exit_code,
        signal=signum,
        stdout=stdout,
        stderr=stderr,
        duration_s=round(duration, 3),
        limit_hit=_classify(
            limits,
            timed_out=timed_out,
            exit_code=exit_code,
            signum=signum,
            cpu_s=cpu_s,
            stderr=stderr,
        ),
        network_isolated="--net" in prefix,
        isolation=tuple(isolation),
        cpu_s=cpu_s,
        workdir=layout.work,
        collected=MappingProxyType(
            {
                name: data
                for name in collect
                if (data := _read_collected(layout.work, name)) is not None
            }
        ),
    )


def _classify(
    limits: SandboxLimits,
    *,
    timed_out: bool,
    exit_code: int | None,
    signum: int | None,
    cpu_s: float | None,
    stderr: str,
) -> LimitHit | None:
    """Name the limit that ended a run, from how it ended and what it printed last."""
    if timed_out:
        return "wall_timeout"
    if signum == signal.SIGXCPU or (
        signum == signal.SIGKILL and cpu_s is not None and cpu_s >= limits.cpu_s - 0.05
    ):
        return "cpu"  # the soft limit sends SIGXCPU, the hard one (a second later) SIGKILL
    if signum == signal.SIGXFSZ:
        return "file_size"
    if exit_code == 0 and signum is None:
        return None
    last = stderr[-4000:]
    if _MEMORY_RE.search(last):
        return "memory"
    if _PROCESSES_RE.search(last):
        return "processes"
    if _FILE_SIZE_RE.search(last):
        return "file_size"
    return None


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """Ask the supervisor to kill the tree and report; kill everything after a grace."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), _TERMINATE_GRACE_S)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)  # with --kill-child the namespace dies too
        await proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    """Signal a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid``: ``kill -KILL -1`` run as that uid."""
    kill = shutil.which("kill") or "/bin/kill"
    with contextlib.suppress(OSError):
        proc = await asyncio.create_subprocess_exec(
            kill,
            "-s",
            "KILL",
            "--",
            "-1",
            user=uid,
            group=uid,
            extra_groups=[],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={},
        )
        await proc.wait()


async def _pump(stream: asyncio.StreamReader, capture: _Capture) -> None:
    """Read a stream to its end into a bounded capture."""
    while chunk := await stream.read(65536):
        capture.feed(chunk)


class _Capture:
    """Keeps the head and the tail of a stream, counting what it dropped."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 4
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        """Add bytes read from the stream."""
        self._total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        if len(self._tail) > self._tail_limit:
            del self._tail[: len(self._tail) - self._tail_limit]

    def text(self) -> str:
        """The kept text, with a note where bytes were dropped."""
        dropped = self._total - len(self._head) - len(self._tail)
        head = self._head.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        if dropped == 0:
            return (self._head + self._tail).decode(errors="replace")
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail}"


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``."""
    return text if len(text) <= limit else "..." + text[-limit:]


def _read_status(fd: int) -> dict[str, Any]:
    """Read the supervisor's JSON lines from the status pipe (all writers have exited)."""
    os.set_blocking(fd, False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    status: dict[str, Any] = {}
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict):
                status.update(item)
    return status


def _read_collected(work: Path, name: str) -> bytes | None:
    """Read a file the run left, refusing symlinks and anything outside the copy."""
    path = work / name
    if not path.parent.resolve().is_relative_to(work.resolve()):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read(_COLLECT_MAX_BYTES)


# --- the temporary copy ---------------------------------------------------------------------


def _make_layout(workspace: Path, temp_root: Path, uid: int | None) -> _Layout:
    """Create the run's directories and copy the workspace (blocking)."""
    root = Path(tempfile.mkdtemp(prefix="hybrid-sandbox-", dir=temp_root))
    layout = _Layout(root=root, work=root / "work", home=root / "home", tmp=root / "tmp")
    try:
        source = workspace.resolve()
        shutil.copytree(source, layout.work, symlinks=True, ignore=_copy_filter(source))
        layout.home.mkdir()
        layout.tmp.mkdir()
        if uid is not None:
            root.chmod(0o711)  # the run's uid may pass through, not list or write
            for top in (layout.work, layout.home, layout.tmp):
                _chown_tree(top, uid)
    except BaseException:
        _remove_tree(root)
        raise
    return layout


def _copy_filter(source: Path) -> Any:
    """A copytree filter: skip caches, special files and symlinks leading out of the copy."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {name for name in names if name in _COPY_IGNORE}
        for name in names:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                resolved = Path(os.path.realpath(path))
                if os.path.isabs(target) or not resolved.is_relative_to(source):
                    skipped.add(name)  # would point at the original, or outside it
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                skipped.add(name)  # fifos, sockets, devices
        return skipped

    return ignore


def _chown_tree(top: Path, uid: int) -> None:
    """Give a directory tree to ``uid``."""
    os.lchown(top, uid, uid)
    for directory, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(directory, name), uid, uid)


def _remove_tree(root: Path) -> None:
    """Remove a run's directory, even where the code took permissions away."""

    def retry(func: Any, path: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
            func(path)

    if root.exists():
        shutil.rmtree(root, onerror=retry)


def _first_blocker(path: Path, *, include_self: bool = False) -> Path | None:
    """The first ancestor directory of ``path`` (or itself) that other users cannot enter."""
    for directory in [*reversed(path.parents), *([path] if include_self else [])]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return directory
        if not mode & stat.S_IXOTH:
            return directory
    return None


def _environment(layout: _Layout, extra: Mapping[str, str]) -> dict[str, str]:
    """The run's whole environment: an allow-list, nothing inherited."""
    path = os.pathsep.join(
        dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
    )
    env = {
        "PATH": path,
        "HOME": str(layout.home),
        "TMPDIR": str(layout.tmp),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "MPLBACKEND": "Agg",
    }
    env.update(extra)
    return env


def _rlimits(
    limits: SandboxLimits, uid: int | None, prefix: tuple[str, ...]
) -> list[tuple[str, int, int]]:
    """The rlimits for the command, capped by our own hard limits."""
    mib = 1024 * 1024
    nproc = limits.max_processes
    if uid is None and "--user" not in prefix:
        nproc += _own_process_count()  # the count is per user: leave room for what runs
    wanted = [
        ("RLIMIT_CPU", limits.cpu_s, limits.cpu_s + 1),
        ("RLIMIT_AS", limits.memory_mb * mib, limits.memory_mb * mib),
        ("RLIMIT_NPROC", nproc, nproc),
        ("RLIMIT_FSIZE", limits.max_file_mb * mib, limits.max_file_mb * mib),
        ("RLIMIT_CORE", 0, 0),
    ]
    capped = []
    for name, soft, hard in wanted:
        _, ours = resource.getrlimit(getattr(resource, name))
        if ours == resource.RLIM_INFINITY:
            capped.append((name, soft, hard))
        else:
            capped.append((name, min(soft, ours), min(hard, ours)))
    return capped


def _own_process_count() -> int:
    """How many processes our real uid has (for RLIMIT_NPROC without a uid of our own)."""
    count = 0
    uid = str(os.getuid())
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry.name}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            count += line.split()[1] == uid
                            break
    return count


async def _probe_isolation() -> _Isolation:
    """Try the namespaces this process may create (about 10 ms, once per sandbox)."""
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    true = shutil.which("true")
    if not sys.platform.startswith("linux") or unshare is None or true is None:
        return _Isolation(drop_uid=root, with_net=None, without_net=None)
    base = (unshare,) if root else (unshare, "--user", "--map-root-user")
    namespaces = ("--pid", "--fork", "--kill-child", "--mount-proc")
    with_net = (*base, "--net", *namespaces)
    without_net = (*base, *namespaces)
    return _Isolation(
        drop_uid=root,
        with_net=with_net if await _succeeds((*with_net, true)) else None,
        without_net=without_net if await _succeeds((*without_net, true)) else None,
    )


async def _succeeds(argv: tuple[str, ...]) -> bool:
    """Whether a command exits 0 within a few seconds."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), 10.0) == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


# --- the supervisor -------------------------------------------------------------------------
# These functions run in the supervisor process, shipped as source to ``python -I -S -c``: they
# use only the modules imported by _SUPERVISOR_HEADER and call only each other.

# warnings is imported up front because os.execvp imports it lazily, after the uid drop, when
# the interpreter's own files may be out of the sandbox user's reach.
_SUPERVISOR_HEADER = (
    "from __future__ import annotations\n"
    "import contextlib, ctypes, json, os, resource, signal, sys, time\n"
    "import warnings\n"
)


def _supervisor_source() -> str:
    """The supervisor program: the header, the ``_sv_`` functions and a call to the first."""
    functions = (_sv_main, _sv_expose, _sv_exec_child, _sv_prctl, _sv_cleanup, _sv_children)
    return "\n".join(
        [_SUPERVISOR_HEADER, *(inspect.getsource(f) for f in functions), "_sv_main()\n"]
    )


def _sv_main() -> None:
    """Apply the setup, run the command as a child, report how it ended, kill the rest."""
    config: dict[str, Any] = json.loads(sys.argv[1])
    argv: list[str] = sys.argv[2:]
    status_fd: int = config["status_fd"]
    os.set_inheritable(status_fd, False)
    os.umask(0o022)
    _sv_prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans are re-parented to us, to be killed
    if config["expose"]:
        try:
            _sv_expose(config["expose"])
        except OSError as exc:
            os.write(
                status_fd,
                json.dumps({"setup_error": f"exposing the interpreter: {exc}"}).encode() + b"\n",
            )
            sys.exit(1)
    run = {"child": 0, "terminated": False}

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        run["terminated"] = True
        if run["child"]:
            with contextlib.suppress(OSError):
                os.killpg(run["child"], signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    child = os.fork()
    if child == 0:
        _sv_exec_child(config, argv, status_fd)
    run["child"] = child
    if run["terminated"]:
        on_signal(signal.SIGTERM, None)
    while True:
        try:
            pid, wait_status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            wait_status, usage = 0, None
            break
        if pid == child:
            break
    _sv_cleanup(child, config["uid"])
    report: dict[str, Any] = {
        "exit_code": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3) if usage else None,
    }
    os.write(status_fd, json.dumps(report).encode() + b"\n")


def _sv_expose(groups: list[list[Any]]) -> None:
    """Hide each blocking directory behind a tmpfs and bind-mount the prefixes back."""
    ms_rdonly, ms_nosuid, ms_nodev, ms_remount, ms_bind, ms_rec = 1, 2, 4, 32, 4096, 16384
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]

    def mount(
        source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        encoded = [None if s is None else s.encode() for s in (source, target, fstype, data)]
        if libc.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), target)

    for blocker, prefixes in groups:
        fds = [os.open(prefix, os.O_PATH | os.O_DIRECTORY) for prefix in prefixes]
        mount("tmpfs", blocker, "tmpfs", ms_nosuid | ms_nodev, "mode=0755,size=64k")
        for prefix, fd in zip(prefixes, fds, strict=True):
            os.makedirs(prefix, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", prefix, None, ms_bind | ms_rec, None)
            mount(None, prefix, None, ms_remount | ms_bind | ms_rdonly, None)
            os.close(fd)


def _sv_exec_child(config: dict[str, Any], argv: list[str], status_fd: int) -> None:
    """In the forked child: apply the limits, drop privileges and exec the command."""
    try:
        os.setpgid(0, 0)
        for signum in (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGPIPE,
            signal.SIGXFSZ,
            signal.SIGXCPU,
        ):
            signal.signal(signum, signal.SIG_DFL)  # Python ignores SIGPIPE and SIGXFSZ
        for name, soft, hard in config["rlimits"]:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        uid = config["uid"]
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _sv_prctl(38, 1)  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot give privileges back
        os.chdir(config["cwd"])
        os.execvp(argv[0], argv)  # noqa: S606 -- the command is the caller's argv, no shell
    except BaseException as exc:  # anything at all: report it, never return into the parent
        with contextlib.suppress(OSError):
            os.write(
                status_fd,
                json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n",
            )
    os._exit(127)


def _sv_prctl(option: int, value: int) -> None:
    """Call prctl(2) where the platform has it; elsewhere do nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(option, value, 0, 0, 0)


def _sv_cleanup(child: int, uid: int | None) -> None:
    """Kill the command's group, every process of the run's uid and our re-parented orphans."""
    with contextlib.suppress(OSError):
        os.killpg(child, signal.SIGKILL)
    if uid is not None and os.fork() == 0:
        try:  # a helper with the run's uid kills every process it may signal: the run's own
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(1000):
                os.kill(-1, signal.SIGKILL)
        except OSError:
            pass  # ESRCH: nothing left
        os._exit(0)
    deadline = time.monotonic() + 3.0
    while True:
        for pid in _sv_children(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _sv_children(parent: int) -> list[int]:
    """The pids whose parent is ``parent``, from /proc (empty where there is no /proc)."""
    children = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with (
                    contextlib.suppress(OSError, IndexError, ValueError),
                    open(f"/proc/{entry.name}/stat") as f,
                ):
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        children.append(int(entry.name))
    return children
