"""Where the store lives and who may read it.

The URL or directory it is opened from, private permissions on its directory and files, and
read-only access to a store that cannot be written.

The read-only mount case runs the CLI in a mount namespace (``unshare -rm``) with the data
directory bind-mounted read-only: the tests run as root, for whom ``chmod`` does not stop a
write, but a read-only mount does. Where namespaces are not available that test is skipped,
and ``read_only=True`` (the same ``mode=ro`` open the mount case chooses by itself) is
tested directly.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.composition import open_store
from orchestrator.running.updates import complete_step, new_workflow
from state.clock import FixedClock
from state.config import WorkflowConfig
from state.errors import ConfigError, StoreError
from state.memory_store import MemoryStore
from state.reports import PlanDraft
from state.sqlite_store import DB_FILENAME
from state.store import DecisionEntry, StepResultEntry, Store

from builders import Driver, plan_report

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _gated(store: Store) -> None:
    """wf-gate, driven to the plan gate (so that approving it would write)."""
    d = Driver(workflow_id="wf-gate")
    version = store.create(d.state, d.config)
    d.decide()
    d.finish(PlanDraft(version=1, markdown="# plan"))
    d.decide()
    d.finish(plan_report())
    d.decide()
    assert d.state.waiting_gate is not None
    store.commit("wf-gate", d.state, expected_version=version, owner=None)


def _fill(store: Store) -> None:
    """wf-1 with a decision, a step result and an artifact."""
    d = Driver()
    state = new_workflow("wf-1", "fill missing values", "/ws", T0)
    version = store.create(state, WorkflowConfig())
    state, record = d.pipeline.decide_by_rule(state, WorkflowConfig())
    version = store.commit(
        "wf-1", state, expected_version=version, entries=[DecisionEntry(record)], owner=None
    )
    state = complete_step(state, PlanDraft(version=1, markdown="# plan"), T0)
    store.commit(
        "wf-1",
        state,
        expected_version=version,
        entries=[StepResultEntry(state.history[-1])],
        owner=None,
    )
    store.add_artifact("wf-1", "plan_v1", "plans/v1.md")


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """No umask, so that only the store's own choices make its files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- opening by URL or directory -------------------------------------------------------------


def test_open_store_takes_a_directory_a_sqlite_url_or_memory(tmp_path: Path) -> None:
    """A directory and sqlite:///PATH open the same SQLite file; memory:// opens a fresh store."""
    with open_store(tmp_path / "a") as store:
        _fill(store)
    with open_store(f"sqlite://{tmp_path / 'a'}") as store:
        assert [s.workflow_id for s in store.list_workflows()] == ["wf-1"]
    with open_store(f"sqlite://{tmp_path / 'a' / DB_FILENAME}") as store:
        assert store.load("wf-1").version == 3
    with open_store("memory://") as fresh, open_store("memory://") as other:
        assert isinstance(fresh, MemoryStore)
        _fill(fresh)
        assert other.list_workflows() == []  # each memory:// is a store of its own


def test_named_memory_stores_are_shared_by_their_handles() -> None:
    """memory://NAME gives every handle the same in-process store."""
    with open_store("memory://files-shared") as one, open_store("memory://files-shared") as two:
        _fill(one)
        assert two.load("wf-1").version == 3


@pytest.mark.parametrize(
    "url", ["mysql://db/orch", "file:///tmp/x", "sqlite://relative/path"], ids=str
)
def test_an_unknown_or_malformed_store_url_names_what_is_supported(url: str) -> None:
    """An unknown scheme (or a relative sqlite path) raises ConfigError saying what works."""
    with pytest.raises(ConfigError, match=r"sqlite:///") as err:
        open_store(url)
    if not url.startswith("sqlite"):
        assert "memory://" in str(err.value)
        assert "postgresql://" in str(err.value)
        assert repr(url.partition("://")[0]) in str(err.value)


# -- permissions -----------------------------------------------------------------------------


def test_a_new_store_is_private_whatever_the_umask(tmp_path: Path, umask_zero: None) -> None:
    """The data directory is made 0700 and the database, -wal and -shm files 0600."""
    data = tmp_path / "deep" / "data"
    with open_store(data) as store:
        _fill(store)
        files = [data / DB_FILENAME, *(data / (DB_FILENAME + s) for s in ("-wal", "-shm"))]
        assert all(f.exists() for f in files)  # the WAL companions exist while it is open
        assert _mode(data) == 0o700
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_existing_open_files_are_tightened(tmp_path: Path, umask_zero: None) -> None:
    """A database file (and companions) readable by others is made 0600 when opened."""
    with open_store(tmp_path) as store:
        _fill(store)
    db = tmp_path / DB_FILENAME
    db.chmod(0o644)
    shm = tmp_path / (DB_FILENAME + "-shm")
    shm.write_bytes(b"")
    shm.chmod(0o666)
    with open_store(tmp_path) as store:
        assert store.load("wf-1").version == 3
        assert _mode(db) == 0o600
        assert _mode(shm) == 0o600


def test_an_existing_directory_open_to_others_is_warned_about(tmp_path: Path) -> None:
    """A data directory others can read is left as it is (it may not be ours) and warned about."""
    tmp_path.chmod(0o755)
    with capture_logs() as logs, open_store(tmp_path):
        pass
    assert _mode(tmp_path) == 0o755
    (warning,) = [e for e in logs if e["event"] == "store.dir.open_to_others"]
    assert warning["mode"] == "0o755"
    assert "chmod 700" in warning["advice"]


# -- read-only -------------------------------------------------------------------------------


def test_a_read_only_store_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    """Opened read-only (mode=ro), every read works, every write says why not; no byte changes."""
    with open_store(tmp_path) as store:
        _fill(store)
    before = (tmp_path / DB_FILENAME).read_bytes()
    with open_store(tmp_path, read_only=True, clock=FixedClock(T0)) as store:
        assert [s.workflow_id for s in store.list_workflows()] == ["wf-1"]
        assert store.load("wf-1").version == 3
        assert [e.seq for e in store.ledger("wf-1")] == [1, 2]
        assert [a.path for a in store.artifacts("wf-1")] == ["plans/v1.md"]
        assert store.lease("wf-1") is None
        with pytest.raises(StoreError, match=r"cannot acquire the lease: .* is open read-only"):
            store.acquire_lease("wf-1", "w1", 30)
        state = store.load("wf-1").state
        with pytest.raises(StoreError, match="open read-only"):
            store.commit("wf-1", state, expected_version=3, owner=None)
    assert (tmp_path / DB_FILENAME).read_bytes() == before


def test_a_read_only_open_of_a_missing_store_says_none_can_be_made(tmp_path: Path) -> None:
    """Read-only with no database file raises StoreError instead of creating one."""
    with pytest.raises(StoreError, match="there is no store"):
        open_store(tmp_path, read_only=True)
    assert not (tmp_path / DB_FILENAME).exists()


def _can_mount_read_only(probe: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0"',
            str(probe),
        ],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_read_commands_work_on_a_read_only_mount(tmp_path: Path) -> None:
    """On a read-only bind mount, list/status/inspect/export exit 0; approve fails clearly."""
    data = tmp_path / "data"
    with open_store(data) as store:
        _fill(store)
        _gated(store)
    if not _can_mount_read_only(data):
        pytest.skip("no mount namespaces here (unshare -rm); read_only=True is tested above")
    before = (data / DB_FILENAME).read_bytes()
    # Read-only by mode too, as a user would leave it (root ignores modes: the mount decides).
    (data / DB_FILENAME).chmod(0o400)
    data.chmod(0o500)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "unshare",
                "-rm",
                "sh",
                "-c",
                script,
                "sh",
                str(data),
                sys.executable,
                "-m",
                "orchestrator",
                *args,
                "--data-dir",
                str(data),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    for args in (("list",), ("status", "wf-1"), ("inspect", "wf-1"), ("export", "wf-1")):
        done = cli(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "wf-1" in done.stdout
    refused = cli("approve", "wf-gate", "--as", "erin")
    assert refused.returncode != 0
    assert "read-only" in refused.stderr and "Traceback" not in refused.stderr
    assert (data / DB_FILENAME).read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == [DB_FILENAME]  # no -wal, no -shm
    data.chmod(0o700)
