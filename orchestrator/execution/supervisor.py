"""The child-side supervisor of one sandboxed run (a program, not a library module).

Started by the launcher as ``[unshare ...] python -I -S supervisor.py CONFIG_JSON ARGV...``;
``-I -S`` keep the workspace, the environment and site-packages out of this interpreter, so it
uses the standard library only and nothing the run's code could have placed. It:

1. makes ``/tmp`` and ``/dev/shm`` private when it has a mount namespace (an empty tmpfs each,
   with the run's own directory bind-mounted back), and exposes the interpreter where a 0700
   directory hides it;
2. forks the command into its own process group, applies the rlimits, drops to the run's uid
   and asks the kernel to kill the command should the supervisor die (PR_SET_PDEATHSIG);
3. waits, enforcing the wall-clock limit itself (it kills the command's group at the deadline)
   and watching the lifeline: a pipe whose write end only the orchestrator holds. End of file
   on it means the orchestrator died, and the run is killed at once. The supervisor also asks
   for SIGTERM when its own parent dies;
4. kills everything the run left (its process group, every process of its uid, orphans that
   were re-parented to it as a child subreaper) and reports how the command ended as one JSON
   line on the status descriptor.

In a PID namespace the supervisor is PID 1, so its exit also kills whatever escaped the sweep.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

# os.execvp imports warnings lazily, after the uid drop, when the interpreter's own files may
# be out of the sandbox user's reach: import it while we still can read them.
import warnings  # noqa: F401

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384


class _Run:
    """What the wait loop knows about the command."""

    def __init__(self) -> None:
        self.child = 0
        self.terminated = False
        self.timed_out = False
        self.orphaned = False

    def kill(self) -> None:
        """Kill the command's process group (nothing when it has not started)."""
        if self.child:
            with contextlib.suppress(OSError):
                os.killpg(self.child, signal.SIGKILL)


def main() -> None:
    """Set up, run the command as a child, enforce the limits, report, kill the rest."""
    config: dict[str, object] = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    status_fd = int(str(config["status_fd"]))
    lifeline_fd = int(str(config["lifeline_fd"]))
    for fd in (status_fd, lifeline_fd):
        os.set_inheritable(fd, False)
    os.umask(0o022)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans are re-parented to us, to be killed
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # our parent died: clean up as on SIGTERM
    try:
        for note in _private_dirs(config):
            _report(status_fd, {"note": note})
        expose = config.get("expose")
        if isinstance(expose, list) and expose:
            _expose(expose)
    except OSError as exc:
        _report(status_fd, {"setup_error": f"preparing the sandbox's mounts: {exc}"})
        sys.exit(1)
    run = _Run()

    def on_signal(_signum: int, _frame: object) -> None:
        run.terminated = True
        run.kill()

    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # only to wake the loop
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    child = os.fork()
    if child == 0:
        _exec_child(config, argv, status_fd)
    with contextlib.suppress(OSError):  # EACCES: the child has exec'd, its group is set
        os.setpgid(child, child)  # here too, so that a kill right now reaches the new group
    run.child = child
    if run.terminated:
        run.kill()
    wait_status, usage = _wait(run, lifeline_fd, wake_r, float(str(config["wall_timeout_s"])))
    uid = config.get("uid")
    _cleanup(child, uid if isinstance(uid, int) else None)
    _report(
        status_fd,
        {
            "exit_code": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
            "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3) if usage else None,
            "wall_timeout": run.timed_out,
            "orphaned": run.orphaned,
        },
    )


def _wait(
    run: _Run, lifeline_fd: int, wake_fd: int, wall_timeout_s: float
) -> tuple[int, resource.struct_rusage | None]:
    """Reap children until the command exits; kill it at the deadline or without a parent."""
    deadline = time.monotonic() + wall_timeout_s
    watching = [lifeline_fd, wake_fd]
    while True:
        try:
            pid, wait_status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return 0, None
        if pid == run.child:
            return wait_status, usage
        if pid:
            continue  # an orphan re-parented to us: reaped, look again
        remaining = deadline - time.monotonic()
        if remaining <= 0 and not run.timed_out:
            run.timed_out = True
            run.kill()
        readable, _, _ = select.select(watching, [], [], max(remaining, 0) or 0.05)
        if wake_fd in readable:
            with contextlib.suppress(OSError):
                os.read(wake_fd, 4096)
        if lifeline_fd in readable:
            with contextlib.suppress(OSError):
                if os.read(lifeline_fd, 1) == b"":
                    run.orphaned = True  # the orchestrator is gone: nobody will read a result
                    run.kill()
                    watching.remove(lifeline_fd)


def _report(fd: int, item: dict[str, object]) -> None:
    """Write one JSON line to the status descriptor (whoever reads it may be gone)."""
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(item).encode() + b"\n")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    """mount(2) through libc."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    encoded = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if libc.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), target)


def _private_dirs(config: dict[str, object]) -> list[str]:
    """Cover /tmp and /dev/shm with fresh tmpfs mounts, keeping what the run needs there.

    Kept (bind-mounted back): the run's own directory, writable, and the interpreter's
    prefixes, read-only, when they lie under a covered directory (a checkout and its
    virtualenv under /tmp, as a CI job may have them).

    Returns:
        Notes on what could not be made private (the run goes on without it).
    """
    private = config.get("private_dirs")
    root = str(config.get("run_root", ""))
    read_only = config.get("keep_read_only")
    size_mb = int(str(config.get("tmpfs_mb", 64)))
    notes: list[str] = []
    if not isinstance(private, list):
        return notes
    wanted = [(root, False)] if root else []
    if isinstance(read_only, list):
        wanted += [(str(p), True) for p in read_only]
    for entry in private:
        mountpoint = str(entry)
        if not os.path.isdir(mountpoint):
            continue
        inside = mountpoint.rstrip("/") + "/"
        keeps = [
            (p, ro, os.open(p, os.O_PATH | os.O_DIRECTORY))
            for p, ro in wanted
            if p.startswith(inside) and os.path.isdir(p)
        ]
        try:
            note = _cover(mountpoint, keeps, size_mb)
        finally:
            for _, _, fd in keeps:
                os.close(fd)
        if note:
            notes.append(note)
    return notes


def _cover(mountpoint: str, keeps: list[tuple[str, bool, int]], size_mb: int) -> str:
    """Mount an empty tmpfs on ``mountpoint`` and bind each kept path (open as its fd) back.

    Returns:
        A note when the mount point stays shared with the host, else an empty string.
    """
    try:
        _mount("tmpfs", mountpoint, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={size_mb}m")
    except OSError as exc:
        return f"{mountpoint} is shared with the host: {exc}"
    try:
        for path, read_only, fd in keeps:
            os.makedirs(path, 0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None)
            if read_only:
                _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
    except OSError as exc:
        _umount(mountpoint)  # what the run needs must stay reachable: give the shared one back
        return f"{mountpoint} is shared with the host: {exc}"
    return ""


def _umount(target: str) -> None:
    """Detach a mount (umount2 with MNT_DETACH); raises OSError when it cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(target.encode(), 2) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), target)


def _expose(groups: list[object]) -> None:
    """Hide each blocking directory behind a tmpfs and bind-mount the prefixes back."""
    for group in groups:
        assert isinstance(group, list)
        blocker, prefixes = str(group[0]), [str(p) for p in group[1]]
        fds = [os.open(prefix, os.O_PATH | os.O_DIRECTORY) for prefix in prefixes]
        _mount("tmpfs", blocker, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
        for prefix, fd in zip(prefixes, fds, strict=True):
            os.makedirs(prefix, 0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", prefix, None, _MS_BIND | _MS_REC, None)
            _mount(None, prefix, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
            os.close(fd)


def _exec_child(config: dict[str, object], argv: list[str], status_fd: int) -> None:
    """In the forked child: apply the limits, drop privileges and exec the command."""
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for signum in (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGPIPE,
            signal.SIGXFSZ,
            signal.SIGXCPU,
            signal.SIGCHLD,
        ):
            signal.signal(signum, signal.SIG_DFL)  # Python ignores SIGPIPE and SIGXFSZ
        limits = config["rlimits"]
        assert isinstance(limits, list)
        for name, soft, hard in limits:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        uid = config.get("uid")
        if isinstance(uid, int):
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        # after the uid change, which clears it: the command dies with the supervisor
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries cannot give privileges back
        os.chdir(str(config["cwd"]))
        os.execvp(argv[0], argv)  # noqa: S606 -- the command is the caller's argv, no shell
    except BaseException as exc:  # anything at all: report it, never return into the parent
        _report(status_fd, {"setup_error": f"{type(exc).__name__}: {exc}"})
    os._exit(127)


def _prctl(option: int, value: int) -> None:
    """Call prctl(2) where the platform has it; elsewhere do nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(option, value, 0, 0, 0)


def _cleanup(child: int, uid: int | None) -> None:
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
        for pid in _children(os.getpid()):
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


def _children(parent: int) -> list[int]:
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


if __name__ == "__main__":
    main()
