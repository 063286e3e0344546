"""Project environments: built offline from the wheel cache, cached by key, exposed read-only."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.execution.environments import (
    MARKER,
    ProjectEnvironment,
    build_environment,
    environment_key,
    project_environment,
)
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from state.check_settings import EnvironmentSettings
from state.errors import SandboxError

from support.wheels import EXAMPLE, offline, require_wheels

SANDBOX = Sandbox(SandboxLimits(wall_timeout_s=60))


@pytest.fixture
def example_env(env_cache: Path) -> ProjectEnvironment:
    """The example repository's environment (pandas, pytest, coverage), built offline."""
    require_wheels("pandas", "numpy", "pytest", "coverage")
    settings = offline(env_cache, requirements="requirements.txt")
    return asyncio.run(build_environment(settings, EXAMPLE))


def tiny_workspace(root: Path, requirements: str = "iniconfig\n") -> Path:
    """A workspace whose requirements.txt names one small pure-Python package."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "requirements.txt").write_text(requirements, encoding="utf-8")
    return root


def env_dirs(cache: Path) -> list[str]:
    """The environment directories in a cache (not the links, locks or staging names)."""
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.is_symlink())


async def run_in(env: ProjectEnvironment, workspace: Path, code: str) -> tuple[int | None, str]:
    """Run ``python -I -c code`` with the project environment in the sandbox."""
    result = await SANDBOX.run(
        workspace,
        [env.python, "-I", "-c", code],
        read_only=env.prefixes,
        path=(env.bin_dir,),
    )
    return result.exit_code, result.stdout + result.stderr


async def test_the_project_env_has_its_packages_and_none_of_ours(
    example_env: ProjectEnvironment, tmp_path: Path
) -> None:
    """Pandas imports in the sandbox with the project env; pydantic and orchestrator do not."""
    workspace = tiny_workspace(tmp_path / "ws")
    code, out = await run_in(example_env, workspace, "import pandas; print(pandas.__version__)")
    assert code == 0, out
    for ours in ("pydantic", "orchestrator", "structlog"):
        code, out = await run_in(example_env, workspace, f"import {ours}")
        assert code == 1, f"{ours} leaked into the project environment: {out}"
        assert f"No module named '{ours}'" in out
    code, out = await run_in(example_env, workspace, "import sys; print('\\n'.join(sys.path))")
    assert code == 0
    assert sys.prefix not in out.split("\n")  # the orchestrator's venv is not on its path
    assert not any(p.startswith(sys.prefix + os.sep) for p in out.split())


async def test_a_second_build_reuses_the_cached_environment(tmp_path: Path) -> None:
    """The same requirements build once (sweeping a killed build's leftovers), then are reused."""
    require_wheels("iniconfig")
    cache = tmp_path / "cache"
    workspace = tiny_workspace(tmp_path / "ws")
    settings = offline(cache, requirements="requirements.txt")
    version = "{}.{}.{}".format(*sys.version_info[:3])
    key = environment_key(settings, b"iniconfig\n", version)
    killed = cache / f"{key}-deadbeef"
    (killed / "bin").mkdir(parents=True)  # what a build killed mid-way leaves
    lines: list[str] = []
    first = await build_environment(settings, workspace, progress=lines.append)
    assert first.built
    assert not killed.exists()
    assert any("installing requirements.txt" in line for line in lines)
    assert first.path is not None
    marker = (first.path / MARKER).read_text()
    lines.clear()
    second = await build_environment(settings, workspace, progress=lines.append)
    assert not second.built
    assert second.path == first.path
    assert (second.path / MARKER).read_text() == marker  # not rebuilt: same marker
    assert lines == []  # no install step ran
    assert env_dirs(cache) == [first.path.name]
    assert json.loads(marker)["source"] == "requirements.txt"


async def test_changed_requirements_get_a_new_environment(tmp_path: Path) -> None:
    """The key follows the file's bytes, the Python version and the install options."""
    settings = EnvironmentSettings(requirements="requirements.txt")
    key = environment_key(settings, b"pandas\n", "3.11.7")
    assert key == environment_key(settings, b"pandas\n", "3.11.7")
    assert key != environment_key(settings, b"pandas>=2\n", "3.11.7")
    assert key != environment_key(settings, b"pandas\n", "3.12.1")
    moved = settings.model_copy(update={"find_links": "/wheels", "offline": True})
    assert key != environment_key(moved, b"pandas\n", "3.11.7")


async def test_concurrent_builds_make_one_environment(tmp_path: Path) -> None:
    """Two builds of one key at once: one builds, the other waits on the lock and reuses it."""
    require_wheels("iniconfig")
    cache = tmp_path / "cache"
    workspace = tiny_workspace(tmp_path / "ws")
    settings = offline(cache, requirements="requirements.txt")
    a, b = await asyncio.gather(
        build_environment(settings, workspace), build_environment(settings, workspace)
    )
    assert sorted([a.built, b.built]) == [False, True]
    assert a.path == b.path
    assert a.path is not None
    assert env_dirs(cache) == [a.path.name]


async def test_a_failed_build_leaves_nothing_and_shows_the_installers_lines(
    tmp_path: Path,
) -> None:
    """A requirement the wheel cache lacks: a clear error in the installer's words, no leftovers."""
    cache = tmp_path / "cache"
    workspace = tiny_workspace(tmp_path / "ws", "no-such-package-for-these-tests==1.0\n")
    settings = offline(cache, requirements="requirements.txt")
    with pytest.raises(SandboxError) as err:
        await build_environment(settings, workspace)
    message = str(err.value)
    assert "could not be built from requirements.txt" in message
    assert "no-such-package-for-these-tests" in message
    said = ("No matching distribution", "not found in the provided package locations")
    assert any(words in message for words in said), message  # pip's words, or uv's
    assert env_dirs(cache) == []
    assert not any(p.is_symlink() for p in cache.iterdir())


async def test_a_missing_requirements_file_is_a_clear_error(tmp_path: Path) -> None:
    """The error names the file and the workspace, and says what to do."""
    settings = EnvironmentSettings(requirements="requirements-dev.txt", cache_dir=str(tmp_path))
    with pytest.raises(SandboxError, match=r"requirements-dev\.txt could not be read .* add it"):
        await project_environment(settings, tmp_path)


async def test_pyproject_dependencies_and_extras_are_installed(tmp_path: Path) -> None:
    """pyproject: installs [project] dependencies plus the asked extras, not the project."""
    require_wheels("iniconfig", "packaging")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0"\ndependencies = ["iniconfig"]\n'
        '[project.optional-dependencies]\ntest = ["packaging"]\n',
        encoding="utf-8",
    )
    settings = offline(tmp_path / "cache", pyproject="pyproject.toml", extras=["test"])
    env = await build_environment(settings, workspace)
    code, out = await run_in(env, workspace, "import iniconfig, packaging")
    assert code == 0, out
    wrong = offline(tmp_path / "cache", pyproject="pyproject.toml", extras=["docs"])
    with pytest.raises(SandboxError, match="no optional-dependencies group 'docs'"):
        await build_environment(wrong, workspace)


def test_python_may_name_a_virtualenv_directory(tmp_path: Path) -> None:
    """``python: DIR`` takes DIR/bin/python and exposes the virtualenv's prefix."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = asyncio.run(project_environment(EnvironmentSettings(python=str(venv)), tmp_path))
    assert env is not None
    assert env.python == str(venv / "bin" / "python")
    assert env.is_virtualenv
    assert os.path.realpath(env.prefixes[0]) == os.path.realpath(venv)
    assert env.variables == {"VIRTUAL_ENV": env.prefixes[0]}


async def test_a_python_that_is_not_an_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    """A missing path or a file that is not Python names environment.python."""
    with pytest.raises(SandboxError, match=r"environment\.python"):
        await project_environment(EnvironmentSettings(python=str(tmp_path / "nope")), tmp_path)
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\necho not python\n", encoding="utf-8")
    script.chmod(0o755)
    with pytest.raises(SandboxError, match="did not run"):
        await project_environment(EnvironmentSettings(python=str(script)), tmp_path)


async def test_no_environment_means_the_orchestrators_interpreter(tmp_path: Path) -> None:
    """Without python, requirements or pyproject, nothing is built."""
    assert await project_environment(EnvironmentSettings(), tmp_path) is None


def test_scripts_survive_the_rename_into_place(tmp_path: Path, env_cache: Path) -> None:
    """A console script of a cached environment runs (its shebang names the kept directory)."""
    require_wheels("pandas", "numpy", "pytest", "coverage")
    env = asyncio.run(
        build_environment(offline(env_cache, requirements="requirements.txt"), EXAMPLE)
    )
    pytest_script = shutil.which("pytest", path=env.bin_dir)
    assert pytest_script is not None
    done = subprocess.run([pytest_script, "--version"], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
