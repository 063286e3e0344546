"""The test run inside the sandbox: pytest under coverage, with the tools imported first.

Run as ``python -I -c <this file's text> JUNIT COVERAGE_JSON OMIT PYTEST_ARGS...`` (the text,
not the path, so the run's uid need not reach our source tree). ``-I`` keeps the workspace off
``sys.path`` while coverage, pytest and pytest's built-in plugins are imported, so a
workspace's ``pytest.py``, ``coverage.py`` or ``doctest.py`` cannot stand in for them. Only
then is the workspace put first on ``sys.path``, as ``python -m pytest`` would, for the tests'
own imports; and coverage's modules are set aside while the tests run, so a project with its
own ``coverage`` module (data coverage in an ML repo) imports its own. Coverage is configured
here alone (no ``.coveragerc``, no data file on disk), so the workspace cannot omit its own
files or hand in measurements. Plugins are not auto-loaded (the launcher sets
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): the orchestrator's pytest-asyncio or hypothesis never
join the user's run.

JUNIT and COVERAGE_JSON are the report descriptors (``/proc/self/fd/N``); they are kept from
the tests' subprocesses. Exits with pytest's exit status.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys


def main(argv: list[str]) -> int:
    """Run pytest with ``argv``'s arguments under coverage; write the two reports."""
    junit, coverage_json, omit, *pytest_args = argv
    for path in (junit, coverage_json):
        with contextlib.suppress(OSError, ValueError):
            os.set_inheritable(int(path.rsplit("/", 1)[1]), False)
    import coverage  # noqa: PLC0415 -- imported here, after the descriptors are guarded
    import pytest  # noqa: PLC0415
    from _pytest.config import default_plugins  # noqa: PLC0415

    for name in default_plugins:  # their imports resolve before the workspace is on the path
        importlib.import_module(f"_pytest.{name}")
    workspace = os.getcwd()
    cov = coverage.Coverage(
        data_file=None, config_file=False, source=[workspace], omit=omit.split(",")
    )
    ours = {n: m for n, m in sys.modules.items() if n == "coverage" or n.startswith("coverage.")}
    sys.path.insert(0, workspace)
    cov.start()
    for name in ours:
        del sys.modules[name]  # the tests may import a coverage module of their own
    try:
        status = int(pytest.main([*pytest_args, f"--junitxml={junit}"]))
    finally:
        for name in [n for n in sys.modules if n == "coverage" or n.startswith("coverage.")]:
            del sys.modules[name]
        sys.modules.update(ours)
        cov.stop()
    with contextlib.suppress(coverage.CoverageException, OSError):  # no data: no report
        cov.json_report(outfile=coverage_json)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
