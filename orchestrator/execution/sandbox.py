"""Run generated code in a sandbox: a throw-away copy of the workspace, with limits.

Each :meth:`Sandbox.run` copies the workspace into a fresh temporary directory, runs one
command there under a supervisor (``supervisor.py``, started by ``launch.py``) and removes the
copy. The pieces: ``limits.py`` (what a run may use), ``workdirs.py`` (the copies and the sweep
of a killed run's leftovers), ``launch.py`` (namespaces, descriptors, the wait),
``supervisor.py`` (the child side), ``results.py`` (how a run ended).

What a run guarantees on Linux as root with namespaces (the production setup):

- **The workspace is never modified.** The code runs in the copy, as an unprivileged uid
  picked for this run alone; that uid owns only the copy, its HOME and its TMPDIR, so it cannot
  write the original workspace or any directory the orchestrator owns, whatever path it uses.
- **No secrets.** The environment is a short allow-list (PATH, HOME and TMPDIR inside the
  sandbox, LANG, PYTHONDONTWRITEBYTECODE, ...): never OPENAI_API_KEY or anything else the
  parent holds. ``/proc`` is remounted for a new PID namespace, so the parent's
  ``/proc/<pid>/environ`` is out of sight (and out of reach of another uid anyway).
- **Private /tmp and /dev/shm.** Each is an empty tmpfs in the run's mount namespace (the
  run's own directory is bind-mounted back into it); what the code writes there is gone with
  the run and never seen by the host or the next run.
- **Limits.** A wall-clock limit, enforced by the supervisor itself and again by the
  orchestrator a little later, kills the whole process tree; RLIMIT_CPU, RLIMIT_AS (memory),
  RLIMIT_NPROC (processes and threads: the uid is the run's own, so the count is the
  sandbox's alone), RLIMIT_FSIZE (largest file) and no core files. How the run ended is
  recorded in :attr:`SandboxResult.limit_hit` and, in words, in :attr:`SandboxResult.message`.
- **Nothing survives the run, nor the orchestrator.** The command is PID 1's child in a new
  PID namespace that dies with the supervisor (``unshare --pid --fork --kill-child``); the
  supervisor also kills every process of the run's uid and every descendant that was
  re-parented to it. It kills the run when the orchestrator dies (the lifeline pipe reaches
  end of file, and PR_SET_PDEATHSIG), and the command is killed should the supervisor die.
- **Reports the code cannot forge by path.** Reports asked for with ``reports=`` are written
  through descriptors of nameless files this process created for the run (see ``launch.py``).
- **No network.** A new network namespace has only a loopback interface, and it is down:
  even 127.0.0.1 is unreachable. :attr:`SandboxResult.network_isolated` says whether it applied.
- When the interpreter lives under a directory other users cannot enter (pyenv under a 0700
  ``/root``), the supervisor hides that directory behind an empty tmpfs in the run's private
  mount namespace and bind-mounts only the interpreter's prefixes back, read-only.

What it cannot guarantee elsewhere (each gap is recorded in :attr:`SandboxResult.notes`):

- Without ``unshare`` (no root and no user namespaces, or not Linux): no network isolation,
  no private /tmp, no PID namespace: a descendant that starts its own session can outlive the
  run unless the uid sweep applies (root only).
- Not root: the code runs as the orchestrator's own user, so it can write (and read) wherever
  that user can, including the original workspace by absolute path; only the environment is
  cleaned. RLIMIT_NPROC then counts all of that user's processes (the limit is raised by the
  number already running), unless a user namespace gives the run its own count.
- Always: world-readable files stay readable; RLIMIT_CPU and RLIMIT_AS apply per process, not
  to the tree; RLIMIT_AS counts address space, so runtimes that reserve much of it need a
  generous ``memory_mb``. A limit is recognised from the exit signal or from the error the
  program printed last, which is a heuristic for programs that catch and rephrase errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from orchestrator.execution.launch import (
    Isolation,
    Launch,
    check_reachable,
    execute,
    probe_isolation,
)
from orchestrator.execution.limits import LimitHit, SandboxLimits
from orchestrator.execution.results import SandboxResult
from orchestrator.execution.workdirs import Layout, make_layout, remove_tree, sweep_stale_sandboxes
from state.errors import SandboxError

log = structlog.get_logger(__name__)

__all__ = ["LimitHit", "Sandbox", "SandboxLimits", "SandboxResult", "sweep_stale_sandboxes"]

# Far above regular users (1000-60000), nobody (65534) and systemd's container range; each run
# draws its own uid so that RLIMIT_NPROC and the final kill sweep see that run's processes only.
_UID_BASE = 2_000_000_000
_UID_POOL = 65_536


def _resolved(paths: Sequence[str]) -> tuple[str, ...]:
    """Each path with its symlinks resolved (mounts need the real directory)."""
    return tuple(os.path.realpath(p) for p in paths)


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
        self._isolation: Isolation | None = None
        self._noted = False

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
        reports: Sequence[str] = (),
        read_only: Sequence[str] = (),
        path: Sequence[str] = (),
    ) -> SandboxResult:
        """Run ``argv`` in a fresh copy of ``workspace`` and record how it ended.

        Args:
            workspace: the directory to copy; it is only read.
            argv: the command; ``argv[0]`` is looked up on the sandbox's PATH (the
                orchestrator's interpreter directory first, then the system's). Each
                ``{report:NAME}`` in it becomes the path of report ``NAME``'s descriptor.
            keep_workdir: keep the copy and return it in ``workdir``; release it with
                :meth:`discard`.
            env: extra environment variables for the command, on top of the allow-list.
            collect: relative paths of files to read back from the copy after the run.
            reports: names of reports the command writes through descriptors made for this
                run (outside the copy, unreachable by path); read back into ``reports``.
            read_only: more directories the run must read, exposed read-only where a
                directory other users cannot enter hides them (a project's virtualenv).
            path: directories put first on the run's PATH.

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
            check_reachable(temp_root, has_mount_ns=prefix is not None, more=read_only)
            if uid is not None
            else ([], "")
        )
        layout = await self._prepare(workspace, temp_root, uid)
        keep = False
        try:
            result = await execute(
                self._limits,
                Launch(
                    layout=layout,
                    argv=tuple(argv),
                    prefix=prefix or (),
                    uid=uid,
                    expose=expose,
                    env=env or {},
                    collect=collect,
                    reports=reports,
                    hint=hint,
                    read_only=_resolved(read_only),
                    path=tuple(path),
                ),
            )
            keep = keep_workdir
            if result.notes and not self._noted:
                self._noted = True  # once per sandbox: the machine does not change
                log.warning("sandbox.degraded", notes=list(result.notes))
        finally:
            if not keep:
                await asyncio.to_thread(remove_tree, layout.root)
        return result if keep else dataclasses.replace(result, workdir=None)

    def with_limits(self, limits: SandboxLimits) -> Sandbox:
        """A sandbox like this one with other limits (the machine is probed only once)."""
        other = Sandbox(limits, temp_root=self._temp_root, use_namespaces=self._use_namespaces)
        other._isolation = self._isolation
        other._noted = self._noted
        return other

    async def discard(self, result: SandboxResult) -> None:
        """Remove a workspace copy kept with ``keep_workdir=True`` (no-op without one)."""
        if result.workdir is not None:
            await asyncio.to_thread(remove_tree, result.workdir.parent)

    async def _probe(self) -> Isolation:
        """Find out once which namespaces this machine lets us create."""
        if self._isolation is None:
            self._isolation = (
                await probe_isolation()
                if self._use_namespaces
                else Isolation(drop_uid=os.geteuid() == 0, with_net=None, without_net=None)
            )
        return self._isolation

    async def _prepare(self, workspace: Path, temp_root: Path, uid: int | None) -> Layout:
        """Copy the workspace into a new temporary directory owned by ``uid``."""
        try:
            return await asyncio.to_thread(make_layout, workspace, temp_root, uid)
        except (OSError, shutil.Error) as exc:
            raise SandboxError(
                f"could not copy workspace {workspace} into the sandbox: "
                f"{exc}; check that it is readable and the disk has room"
            ) from exc
