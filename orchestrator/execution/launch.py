"""Starting one sandboxed run: namespaces, the supervisor, its descriptors, and the wait.

The orchestrator starts ``[unshare ...] python -I -S supervisor.py CONFIG ARGV...`` in a new
session and hands it three kinds of descriptors (nothing else is inherited):

- the status pipe, on which the supervisor reports how the command ended;
- the lifeline: the read end of a pipe whose write end only this process holds. When the
  orchestrator dies, however it dies, the kernel closes the write end and the supervisor
  kills the run (see ``supervisor.py``);
- one descriptor per report the caller asked for (``reports=("junit", ...)``). Each is a new
  file without a name (``O_TMPFILE``, or created and unlinked at once), made by this process
  for this run alone and given to the run's uid. The command reaches it only as
  ``/proc/self/fd/N`` (the ``{report:NAME}`` placeholders in argv); no path in any directory
  leads to it, so the code cannot pre-place it, replace it or guess where it is, and the
  orchestrator reads back exactly the file it created, through its own descriptor. What the
  guarantee does not cover: the process the descriptor is handed to (pytest) runs the code
  under test, which can write to the descriptor like the tool itself can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from orchestrator.execution.limits import SandboxLimits, rlimits
from orchestrator.execution.results import (
    COLLECT_MAX_BYTES,
    Capture,
    SandboxResult,
    classify,
    read_collected,
    read_status,
    tail,
)
from orchestrator.execution.workdirs import Layout, first_blocker
from state.errors import SandboxError

SUPERVISOR = Path(__file__).with_name("supervisor.py")
"""The supervisor program, run by path with ``python -I -S``."""

# Where the interpreter and its packages live, resolved once (they never move while we run).
INTERPRETER_PREFIXES = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)})
PRIVATE_DIRS = ("/tmp", "/dev/shm")  # noqa: S108 -- these are the shared places we cover
"""World-writable places each run gets an empty private copy of (with a mount namespace)."""

_TERMINATE_GRACE_S = 3.0  # after SIGTERM, how long the supervisor gets to clean up
_BACKSTOP_S = 5.0  # the supervisor enforces the wall clock; we wait this much longer
_PIPE_DRAIN_S = 2.0  # after exit, how long to wait for output still in the pipes


@dataclass(frozen=True, slots=True)
class Isolation:
    """What this machine allows, probed once per sandbox."""

    drop_uid: bool  # we are root: each run gets its own unprivileged uid
    with_net: tuple[str, ...] | None  # unshare prefix with a network namespace
    without_net: tuple[str, ...] | None  # unshare prefix without one


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything one run is started with."""

    layout: Layout
    argv: tuple[str, ...]
    prefix: tuple[str, ...]
    uid: int | None
    expose: list[list[Any]]
    env: Mapping[str, str]
    collect: Sequence[str]
    reports: Sequence[str]
    hint: str
    read_only: Sequence[str] = ()  # more directories the run reads (a project's virtualenv)
    path: Sequence[str] = ()  # directories put first on the run's PATH


async def execute(limits: SandboxLimits, launch: Launch) -> SandboxResult:
    """Start the supervisor, wait for it within the limits and collect the outcome.

    Raises:
        SandboxError: the command could not be started.
    """
    slots = {name: _report_slot(launch.uid) for name in launch.reports}
    try:
        return await _run(limits, launch, slots)
    finally:
        for slot in slots.values():
            slot.close()


async def _run(limits: SandboxLimits, launch: Launch, slots: dict[str, BinaryIO]) -> SandboxResult:
    layout, prefix, uid = launch.layout, launch.prefix, launch.uid
    fds = {name: slot.fileno() for name, slot in slots.items()}
    argv = tuple(_fill_reports(arg, fds) for arg in launch.argv)
    status_r, status_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()  # we keep the write end: its EOF means we died
    private = "--mount-proc" in prefix
    config = {
        "status_fd": status_w,
        "lifeline_fd": lifeline_r,
        "cwd": str(layout.work),
        "uid": uid,
        "expose": launch.expose,
        "rlimits": rlimits(limits, own_uid=uid is not None or "--user" in prefix),
        "wall_timeout_s": limits.wall_timeout_s,
        "private_dirs": list(PRIVATE_DIRS) if private else [],
        "run_root": str(layout.root),
        # The interpreter may live under a covered directory (a checkout under /tmp).
        "keep_read_only": [*INTERPRETER_PREFIXES, *launch.read_only],
        "tmpfs_mb": max(16, limits.max_file_mb),
    }
    command = [
        *prefix,
        sys.executable,
        "-I",
        "-S",
        str(SUPERVISOR),
        json.dumps(config),
        *argv,
    ]
    out = Capture(limits.max_output_bytes)
    err = Capture(limits.max_output_bytes)
    started = time.monotonic()
    backstop_hit = False
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=layout.work,
                env=environment(layout, launch.env, launch.path),
                start_new_session=True,
                pass_fds=(status_w, lifeline_r, *fds.values()),
            )
        except OSError as exc:
            raise SandboxError(f"could not start the sandbox for {launch.argv[0]}: {exc}") from exc
        finally:
            os.close(status_w)
            os.close(lifeline_r)
        assert proc.stdout is not None
        assert proc.stderr is not None
        pumps = {
            asyncio.create_task(_pump(proc.stdout, out)),
            asyncio.create_task(_pump(proc.stderr, err)),
        }
        try:
            await asyncio.wait_for(proc.wait(), limits.wall_timeout_s + _BACKSTOP_S)
        except TimeoutError:
            backstop_hit = True  # the supervisor did not stop the run itself
            await _terminate(proc)
        finally:
            if proc.returncode is None:  # cancelled: leave nothing behind
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            _, pending = await asyncio.wait(pumps, timeout=_PIPE_DRAIN_S)
            for task in pending:
                task.cancel()
        duration = time.monotonic() - started
        status = read_status(status_r)
    finally:
        os.close(status_r)
        os.close(lifeline_w)
        if uid is not None and "--pid" not in prefix:
            await kill_uid(uid)  # no namespace dies with the supervisor: sweep the uid
    if "setup_error" in status:
        raise SandboxError(
            f"could not run {launch.argv[0]!r} in the sandbox: {status['setup_error']}{launch.hint}"
        )
    if "exit_code" not in status and not backstop_hit:
        # The supervisor died before reporting: show why instead of guessing.
        raise SandboxError(
            f"the sandbox supervisor failed (exit {proc.returncode}): {tail(err.text(), 2000)}"
        )
    return _result(
        limits,
        launch,
        status,
        proc.returncode,
        timed_out=backstop_hit or bool(status.get("wall_timeout")),
        stdout=out.text(),
        stderr=err.text(),
        duration=duration,
        reports={name: _read_slot(slot) for name, slot in slots.items()},
    )


def _result(
    limits: SandboxLimits,
    launch: Launch,
    status: dict[str, Any],
    returncode: int | None,
    *,
    timed_out: bool,
    stdout: str,
    stderr: str,
    duration: float,
    reports: dict[str, bytes],
) -> SandboxResult:
    """Put together the result of a finished run."""
    prefix = launch.prefix
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
    notes = list(status.get("notes", []))
    if "--mount-proc" in prefix:
        if not any("shared with the host" in note for note in notes):
            isolation.append("private_tmp")
    else:
        notes.append(
            "no mount namespace (unshare unavailable here, or namespaces turned off): /tmp and "
            "/dev/shm are shared with the host"
        )
    if "--pid" not in prefix:
        notes.append(
            "no PID namespace: a descendant that leaves the run's process "
            "group is found only by the uid sweep (root) or as an orphan of the supervisor"
        )
    if launch.uid is not None:
        isolation.append("uid_drop")
    else:
        notes.append(
            "not root: the code runs as the orchestrator's user and can write where it can"
        )
    isolation += ["rlimits", "env_allowlist"]
    limit_hit = classify(
        limits,
        timed_out=timed_out,
        exit_code=exit_code,
        signum=signum,
        cpu_s=cpu_s,
        output=stdout[-4000:] + "\n" + stderr[-4000:],
    )
    work = launch.layout.work
    return SandboxResult(
        argv=launch.argv,
        exit_code=exit_code,
        signal=signum,
        stdout=stdout,
        stderr=stderr,
        duration_s=round(duration, 3),
        limit_hit=limit_hit,
        network_isolated="--net" in prefix,
        isolation=tuple(isolation),
        cpu_s=cpu_s,
        workdir=work,
        collected=MappingProxyType(
            {
                name: data
                for name in launch.collect
                if (data := read_collected(work, name)) is not None
            }
        ),
        reports=MappingProxyType(reports),
        notes=tuple(notes),
        message=limits.describe(limit_hit) if limit_hit else "",
    )


# --- report descriptors ----------------------------------------------------------------------


def _report_slot(uid: int | None) -> BinaryIO:
    """A new, empty file without a name, writable by the run's uid through its descriptor."""
    slot = tempfile.TemporaryFile(prefix="hybrid-report-")  # noqa: SIM115 -- closed by execute
    try:
        if uid is not None:
            os.fchown(slot.fileno(), uid, uid)
        if os.fstat(slot.fileno()).st_size != 0:
            raise SandboxError("a fresh report file was not empty; the sandbox refuses it")
    except BaseException:
        slot.close()
        raise
    return slot


def _fill_reports(arg: str, fds: Mapping[str, int]) -> str:
    """Replace ``{report:NAME}`` with the path of that report's descriptor."""
    for name, fd in fds.items():
        arg = arg.replace(f"{{report:{name}}}", f"/proc/self/fd/{fd}")
    return arg


def _read_slot(slot: BinaryIO) -> bytes:
    """What the run wrote to a report descriptor, from the start."""
    return os.pread(slot.fileno(), COLLECT_MAX_BYTES, 0)


# --- the machine ------------------------------------------------------------------------------


def environment(
    layout: Layout, extra: Mapping[str, str], first: Sequence[str] = ()
) -> dict[str, str]:
    """The run's whole environment: an allow-list, nothing inherited.

    ``first`` goes at the head of PATH (a project environment's ``bin``), before the
    orchestrator's interpreter directory and the system's.
    """
    path = os.pathsep.join(
        dict.fromkeys(
            [*first, os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
        )
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


def check_reachable(
    temp_root: Path, *, has_mount_ns: bool, more: Sequence[str] = ()
) -> tuple[list[list[Any]], str]:
    """Check that an unprivileged uid can reach the copies and the interpreter.

    ``more`` are further directories the run must read (a project environment's prefixes).

    Returns:
        ``[[blocking_dir, [prefix, ...]], ...]``, the interpreter prefixes to bind-mount
        back into the run's mount namespace behind a tmpfs over the blocking directory,
        and, when that cannot be done, a hint for the error should the command need them.

    Raises:
        SandboxError: the temporary directory itself is out of the run's reach.
    """
    blocker = first_blocker(temp_root.resolve(), include_self=True)
    if blocker is not None:
        raise SandboxError(
            f"the sandbox's temporary directory {temp_root} lies under "
            f"{blocker}, which other users cannot enter; pass a temp_root "
            "such as /tmp to Sandbox"
        )
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *more)})
    prefixes = [
        p for p in prefixes if not any(p != q and p.startswith(q + os.sep) for q in prefixes)
    ]
    groups: dict[str, list[str]] = {}
    for prefix in prefixes:
        blocked = first_blocker(Path(prefix))
        if blocked is not None:
            groups.setdefault(str(blocked), []).append(prefix)
    if groups and not has_mount_ns:
        return [], (
            f" (the interpreter {sys.executable} or the project environment lies under "
            f"{', '.join(groups)}, "
            "which the sandbox's unprivileged user cannot enter, and no mount "
            "namespace is available to expose it; install Python where every "
            "user can read it)"
        )
    return [[blocked, paths] for blocked, paths in groups.items()], ""


async def probe_isolation() -> Isolation:
    """Try the namespaces this process may create (about 10 ms, once per sandbox)."""
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    true = shutil.which("true")
    if not sys.platform.startswith("linux") or unshare is None or true is None:
        return Isolation(drop_uid=root, with_net=None, without_net=None)
    base = (unshare,) if root else (unshare, "--user", "--map-root-user")
    namespaces = ("--pid", "--fork", "--kill-child", "--mount-proc")
    with_net = (*base, "--net", *namespaces)
    without_net = (*base, *namespaces)
    return Isolation(
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


# --- stopping ---------------------------------------------------------------------------------


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """Ask the supervisor to kill the tree and report; kill everything after a grace."""
    signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), _TERMINATE_GRACE_S)
    except TimeoutError:
        signal_group(proc.pid, signal.SIGKILL)  # with --kill-child the namespace dies too
        await proc.wait()


def signal_group(pgid: int, signum: int) -> None:
    """Signal a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def kill_uid(uid: int) -> None:
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


async def _pump(stream: asyncio.StreamReader, capture: Capture) -> None:
    """Read a stream to its end into a bounded capture."""
    while chunk := await stream.read(65536):
        capture.feed(chunk)
