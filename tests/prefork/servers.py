"""Real pre-fork servers in their own cgroup v1 memory cgroup, and an open-loop HTTP client to load them.

Used by the tests and by ``bench/prefork.py``. Three launchers (context managers), each starting a real server that
serves the leaking app of :mod:`tests.prefork` on ``127.0.0.1:<a free port>`` from inside a fresh memory cgroup
(``tests/cgroups.py``'s :func:`~tests.cgroups.v1_memory_cgroup`, limited to ``limit`` bytes, swap included):

- :func:`gunicorn_server`: gunicorn, ``workers`` sync workers (or another ``worker_class``);
- :func:`gunicorn_gthread_server`: gunicorn, ``gthread`` workers with ``--threads 2``;
- :func:`uwsgi_server`: uWSGI, ``--master --processes N --http-socket 127.0.0.1:PORT --die-on-term --need-app
  --disable-logging`` (the app loaded once in the master, the workers forked from it: uWSGI's default).

:func:`launch` picks one by name (:data:`SERVER_KINDS`). Each yields a :class:`PreforkServer` once ``/ping``
answers and every worker is up, and on the way out stops the master (SIGTERM, then SIGKILL), after which the cgroup
helper kills whatever is left and removes the cgroup. The server joins the cgroup before it execs (a ``/bin/sh``
wrapper writes its pid to ``cgroup.procs``), so the master and every worker are charged to it from the start.

Gunicorn runs without ``setproctitle`` (do not install it): its processes keep the command line they were started
with, which is what memmon's issue 12 is about.

:func:`run_load` (or :func:`run_load_async`, :func:`start_load`) is the client: open loop (requests are sent on a
fixed schedule whatever the server does), one connection per request, no retry, a per-request timeout; it returns a
:class:`LoadResult` (failures, the longest stall, latency percentiles).

Where a launcher cannot run (not root, no writable v1 memory hierarchy, no ``oom_kill`` counter, Flask, gunicorn or
uWSGI missing), it skips the test with the reason; :func:`why_not_runnable` gives the same reason without pytest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib.util
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.prefork import LEAK_ENV, SLEEP_ENV

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
V1_MEMORY = Path("/sys/fs/cgroup/memory")
DEFAULT_LIMIT = 512 * MIB
SERVER_KINDS = ("gunicorn-sync", "gunicorn-gthread", "uwsgi")

# Joins the cgroup named by $0, then becomes the server: the master and all it forks are charged to the cgroup.
_JOIN_THEN_EXEC = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


# -- where it can run --------------------------------------------------------------------------------------------


def venv_binary(name: str) -> Path | None:
    """``name`` beside this interpreter (the venv's script or binary), else on ``$PATH``; None when neither."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def why_not_runnable(kind: str = "gunicorn-sync") -> str | None:
    """Why a server of ``kind`` (one of :data:`SERVER_KINDS`) cannot be started in a memory cgroup here, or None."""
    if kind not in SERVER_KINDS:
        raise ValueError(f"unknown server kind {kind!r}; expected one of {', '.join(SERVER_KINDS)}")
    if os.geteuid() != 0:
        return "creating a cgroup needs root"
    if not (V1_MEMORY / "cgroup.event_control").is_file() or not os.access(V1_MEMORY, os.W_OK):
        return f"{V1_MEMORY} is not a writable cgroup v1 memory mount"
    if "oom_kill " not in (V1_MEMORY / "memory.oom_control").read_text():
        return "memory.oom_control has no oom_kill counter (kernel < 4.13)"
    if importlib.util.find_spec("flask") is None:
        return "Flask is not installed (pip install -e '.[test]')"
    binary = "uwsgi" if kind == "uwsgi" else "gunicorn"
    if venv_binary(binary) is None:
        return f"{binary} is not installed (pip install -e '.[test]')"
    return None


def skip_unless_runnable(kind: str) -> None:
    """``pytest.skip`` with :func:`why_not_runnable`'s reason, if there is one."""
    if why := why_not_runnable(kind):
        import pytest

        pytest.skip(f"{kind}: {why}")


# -- the cgroup and the process tree -----------------------------------------------------------------------------


def oom_kill_count(cgroup: Path) -> int:
    """The cgroup's ``oom_kill`` counter (``memory.oom_control``, kernel >= 4.13): processes the kernel OOM killer
    has killed in it so far. Read it before and after; the difference is what happened in between."""
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise RuntimeError(f"{cgroup}/memory.oom_control has no oom_kill line (kernel < 4.13)")


def usage_bytes(cgroup: Path) -> int:
    """The cgroup's ``memory.usage_in_bytes`` now."""
    return int((cgroup / "memory.usage_in_bytes").read_text())


def children(pid: int) -> list[int]:
    """The children of ``pid``, from ``/proc/<pid>/task/<tid>/children`` of each of its threads; [] once it is
    gone."""
    found: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        with contextlib.suppress(OSError):
            found.update(int(child) for child in (task / "children").read_text().split())
    return sorted(found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str = "/ping", timeout: float = 2.0) -> tuple[int, bytes]:
    """One ``GET`` on its own connection to 127.0.0.1: (status, body); OSError when nothing answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectionError(f"no HTTP status line in {data[:80]!r}")
    return int(status_line[1]), body


# -- the servers -------------------------------------------------------------------------------------------------


@dataclass
class PreforkServer:
    """A running pre-fork server: its master, port and cgroup; its workers are read afresh on every call."""

    kind: str
    master_pid: int
    port: int
    cgroup: Path
    workers: int
    log_path: Path
    argv: list[str]
    process: subprocess.Popen[bytes] = field(repr=False)

    def worker_pids(self) -> list[int]:
        """The master's children now (its workers; uWSGI with ``--http-socket`` has no other child)."""
        return children(self.master_pid)

    def url(self, path: str = "/") -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def alive(self) -> bool:
        """Whether the master is still running."""
        return self.process.poll() is None

    def oom_kills(self) -> int:
        """The cgroup's ``oom_kill`` counter now (see :func:`oom_kill_count`)."""
        return oom_kill_count(self.cgroup)

    def usage_bytes(self) -> int:
        """The cgroup's memory usage now."""
        return usage_bytes(self.cgroup)

    def cgroup_pids(self) -> list[int]:
        """Every process in the cgroup now (the master, its workers, anything they forked)."""
        return [int(pid) for pid in (self.cgroup / "cgroup.procs").read_text().split()]

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the server wrote (stdout and stderr go to :attr:`log_path`)."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def workers_started(self) -> int:
        """Worker processes started so far, the first ones included, counted from the server's log (gunicorn:
        ``Booting worker with pid``; uWSGI: ``spawned uWSGI worker`` and ``Respawned uWSGI worker``). Minus
        :attr:`workers`, it is how many workers were replaced (recycled, OOM-killed, restarted)."""
        text = self.log_path.read_text(errors="replace")
        if self.kind == "uwsgi":
            return text.count("spawned uWSGI worker")  # "Respawned uWSGI worker" included
        return text.count("Booting worker with pid")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until ``/ping`` answers 200 and :attr:`workers` workers are up; RuntimeError (with the log's tail) when
        the master exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if (
                    http_get(self.port, "/ping", timeout=1.0)[0] == 200
                    and len(self.worker_pids()) >= self.workers
                ):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} did not answer within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_workers(self, count: int | None = None, timeout: float = 30.0) -> list[int]:
        """Until the master has ``count`` (default :attr:`workers`) children; returns them. TimeoutError after
        ``timeout``."""
        wanted = self.workers if count is None else count
        deadline = time.monotonic() + timeout
        while len(pids := self.worker_pids()) != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} has {len(pids)} workers, not {wanted}, after {timeout:g} s")
            time.sleep(0.02)
        return pids

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the master, wait up to ``timeout``, then SIGKILL (the master only; the cgroup helper kills
        the rest)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def server_env(leak_bytes: int = 0, response_seconds: float = 0.0) -> dict[str, str]:
    """This environment for a server: the app's defaults (:data:`~tests.prefork.LEAK_ENV`,
    :data:`~tests.prefork.SLEEP_ENV`), the repository on ``PYTHONPATH``, and none of memmon's settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MEMMON_", "PREFORK_"))}
    env[LEAK_ENV] = str(int(leak_bytes))
    env[SLEEP_ENV] = repr(float(response_seconds))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@functools.cache
def gunicorn_has_control_socket() -> bool:
    """Whether this gunicorn has a control socket (``--control-socket``, default ``~/.gunicorn/gunicorn.ctl``,
    which two servers at once would share): the launchers give each server its own."""
    try:
        from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]
    except ImportError:
        return False
    return any(setting.name == "control_socket" for setting in KNOWN_SETTINGS)


def gunicorn_argv(
    port: int,
    *,
    workers: int = 3,
    worker_class: str = "sync",
    threads: int = 1,
    extra_args: Sequence[str] = (),
    control_socket: Path | None = None,
) -> list[str]:
    """The gunicorn command line the launchers run: the venv's ``gunicorn`` script, no access log (gunicorn's
    default), ``control_socket`` where this gunicorn has one."""
    binary = venv_binary("gunicorn")
    if binary is None:
        raise RuntimeError("gunicorn is not installed")
    argv = [
        str(binary),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
    ]
    if threads > 1:
        argv += ["--threads", str(threads)]
    if control_socket is not None and gunicorn_has_control_socket():
        argv += ["--control-socket", str(control_socket)]
    return [*argv, "--chdir", str(ROOT), *extra_args, "tests.prefork:create_app()"]


def uwsgi_argv(port: int, *, processes: int = 3, extra_args: Sequence[str] = ()) -> list[str]:
    """The uWSGI command line the launcher runs: the venv's ``uwsgi``, the venv as its home when there is one, the
    app loaded by ``--eval`` in the master before it forks the workers."""
    binary = venv_binary("uwsgi")
    if binary is None:
        raise RuntimeError("uwsgi is not installed")
    argv = [str(binary), "--master", "--processes", str(processes), "--http-socket", f"127.0.0.1:{port}",
            "--die-on-term", "--need-app", "--disable-logging",
            "--chdir", str(ROOT), "--pythonpath", str(ROOT)]  # fmt: skip
    if sys.prefix != sys.base_prefix:
        argv += ["--home", sys.prefix]
    return [*argv, *extra_args, "--eval", "from tests.prefork import create_app; application = create_app()"]


@contextlib.contextmanager
def _start(
    kind: str,
    build_argv: Callable[[int, Path], list[str]],
    *,
    workers: int,
    limit: int,
    leak_bytes: int,
    response_seconds: float,
    start_timeout: float,
    stop_timeout: float,
) -> Iterator[PreforkServer]:
    """Start ``build_argv(port, workdir)`` inside a fresh memory cgroup of ``limit`` bytes; yield it once ready;
    stop it afterwards (the cgroup helper then kills what is left and removes the cgroup)."""
    skip_unless_runnable(kind)
    from tests.cgroups import v1_memory_cgroup

    with (
        v1_memory_cgroup(limit, prefix=f"memmon-prefork-{kind}") as cgroup,
        tempfile.TemporaryDirectory(prefix="memmon-prefork-") as work,
    ):
        port = free_port()
        argv = build_argv(port, Path(work))
        log_path = Path(work) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", _JOIN_THEN_EXEC, str(cgroup), *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env=server_env(leak_bytes, response_seconds), start_new_session=True,
            )  # fmt: skip
        server = PreforkServer(kind, process.pid, port, cgroup, workers, log_path, argv, process)
        try:
            server.wait_ready(start_timeout)
            yield server
        finally:
            server.stop(stop_timeout)


@contextlib.contextmanager
def gunicorn_server(
    *,
    workers: int = 3,
    worker_class: str = "sync",
    threads: int = 1,
    limit: int = DEFAULT_LIMIT,
    leak_bytes: int = 0,
    response_seconds: float = 0.0,
    extra_args: Sequence[str] = (),
    start_timeout: float = 30.0,
    stop_timeout: float = 5.0,
) -> Iterator[PreforkServer]:
    """gunicorn with ``workers`` workers of ``worker_class`` (``threads`` each) in a fresh cgroup of ``limit``
    bytes; ``extra_args`` go on its command line (e.g. ``["--max-requests", "50", "--max-requests-jitter", "5"]``).
    ``leak_bytes`` and ``response_seconds`` are the app's defaults for requests that do not say."""
    kind = "gunicorn-gthread" if worker_class == "gthread" else "gunicorn-sync"

    def argv(port: int, work: Path) -> list[str]:
        """The command line, the control socket in the server's own directory."""
        return gunicorn_argv(
            port, workers=workers, worker_class=worker_class, threads=threads, extra_args=extra_args,
            control_socket=work / "gunicorn.ctl",
        )  # fmt: skip

    with _start(
        kind, argv, workers=workers, limit=limit, leak_bytes=leak_bytes, response_seconds=response_seconds,
        start_timeout=start_timeout, stop_timeout=stop_timeout,
    ) as server:  # fmt: skip
        yield server


@contextlib.contextmanager
def gunicorn_gthread_server(
    *,
    workers: int = 3,
    threads: int = 2,
    limit: int = DEFAULT_LIMIT,
    leak_bytes: int = 0,
    response_seconds: float = 0.0,
    extra_args: Sequence[str] = (),
    start_timeout: float = 30.0,
    stop_timeout: float = 5.0,
) -> Iterator[PreforkServer]:
    """gunicorn with ``workers`` ``gthread`` workers of ``threads`` threads each (see :func:`gunicorn_server`)."""
    with gunicorn_server(
        workers=workers, worker_class="gthread", threads=threads, limit=limit, leak_bytes=leak_bytes,
        response_seconds=response_seconds, extra_args=extra_args, start_timeout=start_timeout,
        stop_timeout=stop_timeout,
    ) as server:  # fmt: skip
        yield server


@contextlib.contextmanager
def uwsgi_server(
    *,
    processes: int = 3,
    limit: int = DEFAULT_LIMIT,
    leak_bytes: int = 0,
    response_seconds: float = 0.0,
    extra_args: Sequence[str] = (),
    start_timeout: float = 30.0,
    stop_timeout: float = 5.0,
) -> Iterator[PreforkServer]:
    """uWSGI with a master and ``processes`` workers in a fresh cgroup of ``limit`` bytes; ``extra_args`` go on its
    command line (e.g. ``["--max-requests", "50"]``, ``["--reload-on-rss", "150"]``)."""
    with _start(
        "uwsgi", lambda port, _work: uwsgi_argv(port, processes=processes, extra_args=extra_args),
        workers=processes, limit=limit, leak_bytes=leak_bytes, response_seconds=response_seconds,
        start_timeout=start_timeout, stop_timeout=stop_timeout,
    ) as server:  # fmt: skip
        yield server


@contextlib.contextmanager
def launch(
    kind: str,
    *,
    workers: int = 3,
    limit: int = DEFAULT_LIMIT,
    leak_bytes: int = 0,
    response_seconds: float = 0.0,
    extra_args: Sequence[str] = (),
    start_timeout: float = 30.0,
    stop_timeout: float = 5.0,
) -> Iterator[PreforkServer]:
    """The launcher for ``kind`` (``gunicorn-sync``, ``gunicorn-gthread`` with 2 threads, or ``uwsgi``), with
    ``workers`` workers."""
    context: contextlib.AbstractContextManager[PreforkServer]
    if kind in ("gunicorn-sync", "gunicorn-gthread"):
        context = gunicorn_server(
            workers=workers, worker_class="gthread" if kind == "gunicorn-gthread" else "sync",
            threads=2 if kind == "gunicorn-gthread" else 1, limit=limit, leak_bytes=leak_bytes,
            response_seconds=response_seconds, extra_args=extra_args, start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )  # fmt: skip
    elif kind == "uwsgi":
        context = uwsgi_server(
            processes=workers, limit=limit, leak_bytes=leak_bytes, response_seconds=response_seconds,
            extra_args=extra_args, start_timeout=start_timeout, stop_timeout=stop_timeout,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown server kind {kind!r}; expected one of {', '.join(SERVER_KINDS)}")
    with context as server:
        yield server


# -- the load ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request of a load run; times in seconds from the run's start (its first scheduled send)."""

    scheduled: float  # when the open-loop schedule said to send it
    started: float  # when it was sent (connect began); later than scheduled only if the client fell behind
    finished: float  # when the response was complete, or the request failed
    error: str | None  # None: a complete 200 response; else "timeout", "refused", "reset", "http 502", ...

    @property
    def ok(self) -> bool:
        """A complete 200 response."""
        return self.error is None

    @property
    def latency(self) -> float:
        """Seconds from sending to completion (or failure)."""
        return self.finished - self.started


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank, as ``bench/benchlib.percentile``)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class LoadResult:
    """What an open-loop run saw. ``records`` are in schedule order; ``end`` is when the last request finished
    (succeeded or failed), in seconds from the run's start."""

    rate: float
    duration: float
    request_timeout: float
    records: list[RequestRecord]
    end: float

    @property
    def total(self) -> int:
        """Requests sent."""
        return len(self.records)

    @property
    def succeeded(self) -> int:
        """Requests answered 200 in full."""
        return sum(record.ok for record in self.records)

    @property
    def failed(self) -> int:
        """Requests that did not get a complete 200 (timed out, refused, reset, cut short, another status)."""
        return self.total - self.succeeded

    @property
    def errors(self) -> dict[str, int]:
        """Failed requests by kind of error."""
        return dict(Counter(record.error for record in self.records if record.error is not None))

    @property
    def longest_stall(self) -> float:
        """The longest time, in seconds, during which no request completed successfully while the client was
        sending: the largest gap between successive successful completions, where the run's start (the first
        scheduled send, time 0) and its end (the last request's completion or failure, :attr:`end`) count as
        completions. At 30 req/s a healthy server shows about 1/30 s plus jitter; a server that never answers
        shows the whole run; one dead from t onwards shows :attr:`end` - t."""
        points = [0.0, *sorted(record.finished for record in self.records if record.ok), max(self.end, 0.0)]
        return max(later - earlier for earlier, later in itertools.pairwise(points))

    def latency_percentile(self, fraction: float) -> float | None:
        """Latency (sent to complete) below which ``fraction`` of the successful requests lie; None when none
        succeeded. Failed requests are counted by :attr:`failed`, not here."""
        latencies = [record.latency for record in self.records if record.ok]
        return nearest_rank(latencies, fraction) if latencies else None

    @property
    def latency_p50(self) -> float | None:
        """Median latency of the successful requests, seconds."""
        return self.latency_percentile(0.50)

    @property
    def latency_p99(self) -> float | None:
        """99th percentile latency of the successful requests, seconds."""
        return self.latency_percentile(0.99)

    @property
    def max_send_lag(self) -> float:
        """How far behind its schedule the client sent a request, at worst (seconds; large values mean the client,
        not the server, was short of CPU)."""
        return max((record.started - record.scheduled for record in self.records), default=0.0)

    def summary(self) -> str:
        """One line: sent, failed (by error), longest stall, p50/p99."""
        p50, p99 = self.latency_p50, self.latency_p99
        latency = (
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
            if p50 is not None and p99 is not None
            else "-"
        )
        return (
            f"{self.total} sent, {self.failed} failed{f' {self.errors}' if self.errors else ''}, "
            f"longest stall {self.longest_stall:.2f} s, "
            f"{latency}"
        )


async def _request(port: int, path: str, request_timeout: float) -> str | None:
    """One GET on its own connection: None for a complete 200 response, else what went wrong."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(request_timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            data = await reader.read()  # to EOF: the server closes after its answer
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if not data:
        return "closed without answer"
    head, separator, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not separator or len(status) < 2:
        return "incomplete"
    if status[1] != b"200":
        return f"http {status[1].decode(errors='replace')}"
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value) != len(body):
            return "incomplete"
    return None


async def run_load_async(
    port: int, *, rate: float = 30.0, duration: float = 10.0, path: str = "/", request_timeout: float = 5.0
) -> LoadResult:
    """Send ``GET path`` to 127.0.0.1:``port`` at ``rate`` requests a second for ``duration`` seconds, open loop:
    request i is sent at i/``rate`` whether or not earlier ones were answered, each on its own connection
    (``Connection: close``), never retried, failed after ``request_timeout`` seconds. Returns once every request
    finished."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    count = max(1, round(rate * duration))

    async def one(scheduled: float) -> RequestRecord:
        """One request, timed."""
        started = loop.time() - start
        error = await _request(port, path, request_timeout)
        return RequestRecord(scheduled, started, loop.time() - start, error)

    tasks: list[asyncio.Task[RequestRecord]] = []
    for index in range(count):
        scheduled = index / rate
        delay = start + scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    records = list(await asyncio.gather(*tasks))
    end = max((record.finished for record in records), default=0.0)
    return LoadResult(rate, duration, request_timeout, records, end)


def run_load(
    port: int, *, rate: float = 30.0, duration: float = 10.0, path: str = "/", request_timeout: float = 5.0
) -> LoadResult:
    """:func:`run_load_async` from synchronous code, on its own event loop in its own thread (so it may be called
    from inside a running loop too, which it then blocks)."""
    return start_load(port, rate=rate, duration=duration, path=path, request_timeout=request_timeout).result()


class BackgroundLoad:
    """A load run going on in its own thread (see :func:`start_load`)."""

    def __init__(self, port: int, *, rate: float, duration: float, path: str, request_timeout: float) -> None:
        """Start the run now."""
        self.duration = duration
        self.request_timeout = request_timeout
        self._future: concurrent.futures.Future[LoadResult] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run,
            args=(port, rate, duration, path, request_timeout),
            name="prefork-load",
            daemon=True,
        )
        self._thread.start()

    def _run(self, port: int, rate: float, duration: float, path: str, request_timeout: float) -> None:
        """The thread: one event loop for the whole run."""
        try:
            result = asyncio.run(
                run_load_async(port, rate=rate, duration=duration, path=path, request_timeout=request_timeout)
            )
        except BaseException as exc:  # handed to whoever waits for the result
            self._future.set_exception(exc)
        else:
            self._future.set_result(result)

    def done(self) -> bool:
        """Whether the run has finished."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> LoadResult:
        """Wait for the run (by default up to its duration plus the request timeout plus 30 s) and return it."""
        return self._future.result(self.duration + self.request_timeout + 30 if timeout is None else timeout)


def start_load(
    port: int, *, rate: float = 30.0, duration: float = 10.0, path: str = "/", request_timeout: float = 5.0
) -> BackgroundLoad:
    """Start :func:`run_load_async` in a background thread and return at once; ``.result()`` waits for it."""
    return BackgroundLoad(port, rate=rate, duration=duration, path=path, request_timeout=request_timeout)


def leak_path(leak_bytes: int, sleep: float = 0.0) -> str:
    """The app's path that leaks ``leak_bytes`` per request (and sleeps ``sleep`` seconds)."""
    query = f"/?bytes={int(leak_bytes)}"
    return query + (f"&sleep={sleep:g}" if sleep > 0 else "")
