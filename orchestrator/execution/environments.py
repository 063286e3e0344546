"""The project's own Python: the interpreter the checks run with, built and cached here.

A workflow's ``environment:`` section (``state.check_settings.EnvironmentSettings``) says
which Python judges the code:

- nothing: the orchestrator's own interpreter (as before: only the standard library and the
  orchestrator's tools are importable);
- ``python: PATH``: that interpreter, or the virtualenv directory it lives in;
- ``requirements: FILE`` or ``pyproject: FILE`` (of the workspace): a virtualenv built from
  that file once and cached by the hash of the file, the Python version and the install
  options, under ``$ORCHESTRATOR_ENV_CACHE``, ``$XDG_CACHE_HOME/hybrid-orchestrator/envs`` or
  ``~/.cache/hybrid-orchestrator/envs``.

A build uses ``uv`` when it is on PATH, else ``python -m venv`` and pip (the base
interpreter's, installing into the new environment with ``pip --python``, so the environment
itself holds no pip, as with uv). It is atomic: the
virtualenv is made in a directory of its own (``KEY-RANDOM``), its marker file written last,
and only then does the symlink ``KEY`` point at it (made beside and renamed into place, so a
reader sees the old state or the finished environment, never half of one). Scripts in the
environment keep working because the directory they were made in is the one that stays. A
second build of the same key waits on ``KEY.lock`` (``flock``) and then reuses the finished
environment. A failed build removes its directory and raises :class:`SandboxError` with the
installer's last lines; what a killed build left (a directory without its marker) is removed
by the next build of that key, under the lock.

The environment is a plain virtualenv without system site-packages: the orchestrator's own
packages (pydantic, this package) are not importable there unless the project asks for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
import tomllib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import structlog

from orchestrator.execution.results import tail
from orchestrator.execution.workdirs import remove_tree
from state.check_settings import EnvironmentSettings
from state.errors import SandboxError

__all__ = [
    "ENV_CACHE_ENV",
    "MARKER",
    "Progress",
    "ProjectEnvironment",
    "build_environment",
    "build_progress",
    "default_cache_dir",
    "environment_key",
    "inspect_python",
    "project_environment",
]

log = structlog.get_logger(__name__)

ENV_CACHE_ENV = "ORCHESTRATOR_ENV_CACHE"
"""The environment variable naming the directory where built environments are kept."""

MARKER = ".hybrid-environment.json"
"""Written last into a finished environment: what it was built from, and when."""

Progress = Callable[[str], None]
"""Told one line at a time how a build goes."""

build_progress: ContextVar[Progress | None] = ContextVar("build_progress", default=None)
"""Told how a build goes when the caller passes no ``progress``.

A runner sets it around a step, so that a build the step's checks wait for shows in the
live display without every layer between (the validator agent, its tool runner) passing
a callback along. Tasks the step starts inherit it with the rest of their context.
"""

_LOCK_POLL_S = 0.2
_ERROR_LINES = 15
_PROBE = (
    "import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, "
    "'%d.%d.%d' % sys.version_info[:3]]))"
)


@dataclass(frozen=True, slots=True)
class ProjectEnvironment:
    """The Python the checks run with.

    Attributes:
        python: the interpreter (inside the virtualenv when there is one).
        prefixes: its ``sys.prefix`` and ``sys.base_prefix``, which the sandbox must expose.
        bin_dir: the directory of its scripts, put first on the checks' PATH.
        version: its version, ``3.11.7``.
        built: True when this call built the environment (False: found ready).
        path: the cached environment's directory (None for an interpreter given as is).
    """

    python: str
    prefixes: tuple[str, ...]
    bin_dir: str
    version: str
    built: bool = False
    path: Path | None = None

    @property
    def is_virtualenv(self) -> bool:
        """Whether it is a virtualenv (its prefix differs from its base)."""
        return len(set(self.prefixes)) > 1

    @property
    def variables(self) -> dict[str, str]:
        """What a command check is given so that tools find this environment."""
        return {"VIRTUAL_ENV": self.prefixes[0]} if self.is_virtualenv else {}


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where built environments are kept when the configuration names no ``cache_dir``."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "hybrid-orchestrator" / "envs"


async def project_environment(
    settings: EnvironmentSettings,
    workspace: Path,
    *,
    progress: Progress | None = None,
    base_python: str = sys.executable,
) -> ProjectEnvironment | None:
    """The environment a workflow's checks run with; None means the orchestrator's own.

    Args:
        settings: the workflow's ``environment:`` section.
        workspace: where ``requirements`` and ``pyproject`` are read from.
        progress: told how a build goes (it can take a minute); the build also logs.
            Default: ``build_progress``'s, when one is set.
        base_python: the interpreter a virtualenv is built from.

    Raises:
        SandboxError: the interpreter cannot be run, the file is missing, or the build failed.
    """
    if progress is None:
        progress = build_progress.get()
    if settings.python:
        return await inspect_python(_interpreter(settings.python))
    if settings.builds:
        return await build_environment(
            settings, workspace, progress=progress, base_python=base_python
        )
    return None


async def inspect_python(python: str) -> ProjectEnvironment:
    """Ask an interpreter where it lives.

    Raises:
        SandboxError: it cannot be run.
    """
    found = _executable(python)
    code, out = await _capture([found, "-I", "-c", _PROBE], timeout_s=60)
    try:
        executable, prefix, base, version = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise SandboxError(
            f"environment python {found} did not run (exit {code}): {tail(out, 500)}; fix "
            "environment.python in the workflow's configuration"
        ) from exc
    # the path as given, not sys.executable: a virtualenv's python is a symlink to its base
    del executable
    return ProjectEnvironment(
        python=found,
        prefixes=tuple(dict.fromkeys([prefix, base])),
        bin_dir=found.rsplit("/", 1)[0],
        version=version,
    )


def _executable(python: str) -> str:
    """The absolute path of the interpreter ``python`` names (looked up on PATH if bare)."""
    found = shutil.which(python) if "/" not in python else python
    if found is None or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise SandboxError(
            f"environment python {python!r} is not an executable interpreter; fix "
            "environment.python in the workflow's configuration"
        )
    return os.path.abspath(found)


def environment_key(settings: EnvironmentSettings, source: bytes, python_version: str) -> str:
    """The cache key of an environment: the file's hash, the Python and the install options."""
    digest = hashlib.sha256()
    for part in (
        source,
        python_version.encode(),
        b"requirements" if settings.requirements else b"pyproject",
        json.dumps(list(settings.extras)).encode(),
        (settings.find_links or "").encode(),
        b"offline" if settings.offline else b"online",
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:20]


async def build_environment(
    settings: EnvironmentSettings,
    workspace: Path,
    *,
    progress: Progress | None = None,
    base_python: str = sys.executable,
) -> ProjectEnvironment:
    """The cached virtualenv for ``settings``, built first when it is not there yet.

    Raises:
        SandboxError: the file is missing or unreadable, or the build failed (with the
            installer's last lines); nothing half-built is left behind.
    """
    relative = settings.requirements or settings.pyproject or ""
    source_file = (workspace / relative).resolve()
    try:
        source = await asyncio.to_thread(source_file.read_bytes)
    except OSError as exc:
        raise SandboxError(
            f"the project environment's {relative} could not be read in workspace "
            f"{workspace} ({exc.strerror or exc}); add it, or fix environment in the "
            "workflow's configuration"
        ) from exc
    requirements = _requirements(settings, source, source_file)
    base = await inspect_python(base_python)
    cache = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    key = environment_key(settings, source, base.version)
    link = cache / key
    say = _reporter(progress, key)
    relay = _relay(progress, key)
    if (found := _finished(link)) is not None:
        return await _ready(found, built=False)
    await asyncio.to_thread(cache.mkdir, parents=True, exist_ok=True)
    lock_fd = await asyncio.to_thread(os.open, cache / f"{key}.lock", os.O_RDWR | os.O_CREAT)
    try:
        await _lock(lock_fd, say)
        if (found := _finished(link)) is not None:  # another process built it meanwhile
            return await _ready(found, built=False)
        await asyncio.to_thread(_sweep_unfinished, cache, key)
        target = cache / f"{key}-{secrets.token_hex(4)}"
        started = time.monotonic()
        try:
            await _build(settings, base_python, target, requirements, relative, say, relay)
            marker = {
                "key": key,
                "source": relative,
                "python": base.version,
                "built_in_s": round(time.monotonic() - started, 1),
            }
            await asyncio.to_thread((target / MARKER).write_text, json.dumps(marker))
            await asyncio.to_thread(_point, link, target)
        except BaseException:
            await asyncio.to_thread(remove_tree, target)
            raise
        say(f"ready in {time.monotonic() - started:.1f} s: {target}")
        return await _ready(target, built=True)
    finally:
        os.close(lock_fd)


# --- building ---------------------------------------------------------------------------------


def _requirements(settings: EnvironmentSettings, source: bytes, path: Path) -> list[str]:
    """What pip is asked to install: ``-r FILE``, or the pyproject's dependencies."""
    if settings.requirements:
        return ["-r", str(path)]
    try:
        project = tomllib.loads(source.decode()).get("project", {})
        deps = list(project.get("dependencies", []))
        optional = project.get("optional-dependencies", {})
        for extra in settings.extras:
            if extra not in optional:
                raise SandboxError(
                    f"{path} has no optional-dependencies group {extra!r}; fix "
                    "environment.extras in the workflow's configuration"
                )
            deps += optional[extra]
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError) as exc:
        raise SandboxError(
            f"{path} is not a readable pyproject.toml ({exc}); fix it or use requirements:"
        ) from exc
    return [str(d) for d in deps]


async def _build(
    settings: EnvironmentSettings,
    base_python: str,
    target: Path,
    requirements: list[str],
    relative: str,
    say: Progress,
    relay: Progress,
) -> None:
    """Make the virtualenv at ``target`` and install into it (uv when there is one)."""
    uv = shutil.which("uv")
    python = str(target / "bin" / "python")
    options: list[str] = []
    if settings.find_links:
        options += ["--find-links", settings.find_links]
    if settings.offline:
        options.append("--no-index")
    tool = "uv" if uv else "venv"
    say(f"building the project environment from {relative} in {target} (with {tool})")
    if uv:
        create = [uv, "venv", "--quiet", "--python", base_python, str(target)]
        install = [uv, "pip", "install", "--python", python, *options, *requirements]
    elif await _has_pip(base_python):
        # The base's pip installs into the new environment (pip --python): no copy of pip
        # is bootstrapped into it, which is most of a small build's time.
        create = [base_python, "-m", "venv", "--without-pip", str(target)]
        install = [base_python, "-m", "pip", "--python", python, "install", *options]
        install += ["--disable-pip-version-check", *requirements]
    else:
        create = [base_python, "-m", "venv", str(target)]
        install = [python, "-m", "pip", "install", "--disable-pip-version-check", *options]
        install += requirements
    timeout = settings.build_timeout_s
    await _step(create, "create the virtualenv", timeout, relay, relative)
    if requirements:
        say(f"installing {relative}" + (" offline" if settings.offline else ""))
        await _step(install, "install " + relative, timeout, relay, relative)


async def _has_pip(python: str) -> bool:
    """Whether ``python`` has a pip that can install into another environment."""
    code, _ = await _capture([python, "-I", "-c", "import pip"], timeout_s=60)
    return code == 0


async def _step(argv: list[str], what: str, timeout_s: float, say: Progress, rel: str) -> None:
    """Run one build command, relaying its lines; raise with its last lines on failure."""
    code, out = await _capture(argv, timeout_s=timeout_s, on_line=say)
    if code != 0:
        last = "\n".join(out.strip().splitlines()[-_ERROR_LINES:])
        how = "timed out" if code is None else f"exited with status {code}"
        raise SandboxError(
            f"the project environment could not be built from {rel}: {what} {how}:\n{last}\n"
            f"fix {rel} (or environment.find_links / offline in the workflow's "
            "configuration) and run the validation again"
        )


async def _capture(
    argv: list[str], *, timeout_s: float, on_line: Progress | None = None
) -> tuple[int | None, str]:
    """Run a command, its stderr folded into stdout; None as the code when it timed out."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"could not start {argv[0]}: {exc}") from exc
    assert proc.stdout is not None
    lines: list[str] = []

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if on_line is not None and line.strip():
                on_line(line.strip())

    try:
        await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return None, "\n".join(lines)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
    return proc.returncode, "\n".join(lines)


# --- the cache --------------------------------------------------------------------------------


def _finished(link: Path) -> Path | None:
    """The finished environment ``link`` points at, or None."""
    try:
        target = link.resolve(strict=True)
    except OSError:
        return None
    return target if (target / MARKER).is_file() else None


def _sweep_unfinished(cache: Path, key: str) -> None:
    """Remove what a build of ``key`` killed mid-way left (no marker, and the lock is ours)."""
    for leftover in cache.glob(f"{key}-*"):
        if leftover.is_dir() and not leftover.is_symlink() and not (leftover / MARKER).exists():
            remove_tree(leftover)


def _point(link: Path, target: Path) -> None:
    """Make ``link`` point at ``target`` in one rename."""
    staged = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
    os.symlink(target.name, staged)
    try:
        os.replace(staged, link)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise


async def _lock(fd: int, say: Progress) -> None:
    """Take the build lock, waiting (and saying so) while another process builds."""
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not waited:
                say("another process is building this environment; waiting for it")
                waited = True
            await asyncio.sleep(_LOCK_POLL_S)


async def _ready(path: Path, *, built: bool) -> ProjectEnvironment:
    """The finished environment at ``path``."""
    found = await inspect_python(str(path / "bin" / "python"))
    return ProjectEnvironment(
        python=found.python,
        prefixes=found.prefixes,
        bin_dir=found.bin_dir,
        version=found.version,
        built=built,
        path=path,
    )


def _interpreter(python: str) -> str:
    """The interpreter of ``python``: itself, or ``bin/python`` of a virtualenv directory."""
    path = Path(python).expanduser()
    if path.is_dir():
        return str(path / "bin" / "python")
    return python


def _reporter(progress: Progress | None, key: str) -> Progress:
    """One function that logs each build line and hands it to ``progress``.

    The build's own steps are logged at info (``--log-level INFO`` shows them), the
    installer's lines at debug.
    """

    def say(line: str) -> None:
        log.info("environment.build.step", key=key, step=line)
        if progress is not None:
            progress(line)

    return say


def _relay(progress: Progress | None, key: str) -> Progress:
    """Hand an installer's line to ``progress`` and log it at debug."""

    def relay(line: str) -> None:
        log.debug("environment.build.output", key=key, line=line)
        if progress is not None:
            progress(line)

    return relay
