"""The temporary directories of sandboxed runs: making, removing and sweeping them.

Each run gets ``<temp_root>/hybrid-sandbox-<pid>-<random>/`` (``pid`` is the orchestrator
process that made it) with ``work/`` (the workspace copy the code runs in), ``home/``,
``tmp/`` and an ``owner`` marker holding the pid and its start time. A run removes its
directory when it ends; a killed orchestrator cannot, so :func:`sweep_stale_sandboxes` removes
the directories whose owner is no longer running (checked with the start time too, so a
recycled pid does not keep a stale directory alive).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "hybrid-sandbox-"
"""The name prefix of every run directory."""

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


@dataclass(frozen=True, slots=True)
class Layout:
    """The temporary directories of one run."""

    root: Path
    work: Path
    home: Path
    tmp: Path


def make_layout(workspace: Path, temp_root: Path, uid: int | None) -> Layout:
    """Create the run's directories and copy the workspace (blocking).

    Raises:
        OSError, shutil.Error: the copy failed (the partial directory is removed).
    """
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=temp_root))
    layout = Layout(root=root, work=root / "work", home=root / "home", tmp=root / "tmp")
    try:
        (root / "owner").write_text(
            json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())})
        )
        source = workspace.resolve()
        shutil.copytree(source, layout.work, symlinks=True, ignore=_copy_filter(source))
        layout.home.mkdir()
        layout.tmp.mkdir()
        if uid is not None:
            root.chmod(0o711)  # the run's uid may pass through, not list or write
            for top in (layout.work, layout.home, layout.tmp):
                _chown_tree(top, uid)
    except BaseException:
        remove_tree(root)
        raise
    return layout


def sweep_stale_sandboxes(temp_root: Path | None = None) -> list[Path]:
    """Remove the run directories that no live process owns (left by a killed run).

    Only directories named ``hybrid-sandbox-<pid>-...`` are considered; one whose pid is
    running (with the start time its marker recorded) is kept, whoever owns it.

    Args:
        temp_root: where the runs' directories are (default: the system's temporary dir).

    Returns:
        The directories removed.
    """
    root = temp_root or Path(tempfile.gettempdir())
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            pid_text = entry.name[len(PREFIX) :].split("-", 1)[0]
            if not pid_text.isdigit():
                continue  # not ours, or from a version that did not record its owner
            path = Path(entry.path)
            if not _owner_alive(int(pid_text), path):
                remove_tree(path)
                removed.append(path)
    return removed


def _owner_alive(pid: int, path: Path) -> bool:
    """Whether the process that made ``path`` still runs."""
    started = _start_time(pid)
    if started is None:
        return False
    try:
        recorded = json.loads((path / "owner").read_text()).get("start")
    except (OSError, ValueError, AttributeError):
        return True  # no marker yet (being created) or unreadable: the pid runs, keep it
    return recorded is None or recorded == started


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when it does not run."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0  # runs as another user; no /proc to tell its start time
    return 0


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


def remove_tree(root: Path) -> None:
    """Remove a run's directory, even where the code took permissions away."""

    def retry(func: Any, path: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
            func(path)

    if root.exists():
        shutil.rmtree(root, onerror=retry)


def first_blocker(path: Path, *, include_self: bool = False) -> Path | None:
    """The first ancestor directory of ``path`` (or itself) that other users cannot enter."""
    for directory in [*reversed(path.parents), *([path] if include_self else [])]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return directory
        if not mode & stat.S_IXOTH:
            return directory
    return None
