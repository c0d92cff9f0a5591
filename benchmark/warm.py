"""Warm start: the workflow's jobs run as forks of one process that imported torch & co once.

A job of this benchmark spends 4 to 7 s importing torch, torchvision (which imports
``torch._dynamo``), timm, transformers, peft, scikit-learn and pandas before it does any
work, and the default run has about 150 such jobs on 2 cores. With ``warm_start: true``
(the default; local runs only) the workflow starts one server process that imports those
libraries and listens on a Unix socket. Each job's command is then

    python -m benchmark.warm <command> <args>    # instead of: python -m benchmark ...

which is a small client: it hands its arguments, working directory, environment and its
stdin/stdout/stderr to the server, which forks; the fork runs ``python -m benchmark`` in
that directory with that environment and those files, exactly as a fresh process would,
and the client exits with the fork's exit status. Signals the client gets (Snakemake
cancelling a job) go to the fork's process group.

Why the fork gives the same results as a fresh process:
- the server imports only third-party libraries (and this module), so each job imports
  ``benchmark`` and ``models`` from the checkout as it is when the job starts;
- the server only serves clients with its own Python environment and ``sys.path`` (a job
  under ``--sdm conda`` has another environment and runs in its own process instead);
- torch's thread pool is never started in the server; each fork applies the job's
  ``OMP_NUM_THREADS`` (Snakemake sets it to the job's threads) to torch and to the BLAS
  and OpenMP libraries, as a fresh process reads it at start-up;
- each fork seeds torch's, numpy's and Python's default generators from the OS, as a fresh
  process does (the job's own seeds then make its results reproducible);
- what libraries read from the environment when imported (``HF_HOME``, ``MPLBACKEND``, ...)
  comes from the environment Snakemake started in, as the jobs' environments do; only the
  thread counts Snakemake adds per job differ, and those are applied as above.
``tests/test_workflow.py`` runs the ci workflow warm and cold and compares every output.

The socket is in a private temporary folder (``mkdtemp``: only its user can connect), and
the server ends with the workflow that started it, stopping (SIGTERM to its process group) any job
it still runs, as when Snakemake is killed with ``kill -9``. Without a server (no ``BENCHMARK_WARM_SOCKET``, a server that is not yet ready or has
gone, SLURM jobs) the client runs the command in its own process, as
``python -m benchmark`` would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

SOCKET_ENV = "BENCHMARK_WARM_SOCKET"
# Third-party modules the jobs import (models, probes, t-SNE); the server imports them once.
PRELOAD = ("numpy", "pandas", "scipy.stats", "sklearn.linear_model", "sklearn.metrics", "sklearn.manifold",
           "torch", "torchvision", "timm", "transformers", "peft", "open_clip", "safetensors.torch", "pydicom",
           "yaml", "matplotlib")
HEADER = struct.Struct("!I")  # length of the JSON request that follows


def _signature() -> list:
    """What decides which code a job runs: a server serves only clients that match it."""
    return [sys.prefix, sys.path]  # the environment (venv, conda env) and where imports come from


# ---------------------------------------------------------------- client


def run_in_server(path: str, argv: list[str], module: str = "benchmark") -> int | None:
    """``python -m MODULE ARGV`` in a fork of the server at ``path``; its exit status, or
    None when no server answers or the server has another environment (then run it here)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    request = json.dumps({"module": module, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                          "signature": _signature()}).encode()
    try:
        client.connect(path)
        socket.send_fds(client, [HEADER.pack(len(request))], [0, 1, 2])
    except OSError:  # no server yet or any more, or a closed stdin: run here
        client.close()
        return None
    job, received = [], []  # the fork's pid once known; signals that came before it

    def forward(signum, _frame):
        received.append(signum)
        if job:
            try:
                os.killpg(job[0], signum)
            except ProcessLookupError:
                pass

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    client.sendall(request)
    reply = client.makefile("r")
    pid = reply.readline().strip()
    if pid == "refused":  # run here, with this process's own signal handling
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)
        return None
    if not pid:
        print(f"warm start: the server at {path} closed the connection before starting the job", file=sys.stderr)
        return 1
    job.append(int(pid))
    for signum in received:  # cancelled while the server was forking
        forward(signum, None)
    status = reply.readline().strip()
    if status:
        return int(status)
    if received:  # as a shell reports a process that a signal ended
        return 128 + received[-1]
    print(f"warm start: job process {pid} ended without an exit status (killed by a signal?)", file=sys.stderr)
    return 1


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:  # --serve SOCKET LOG PARENT_PID (from start_server)
        serve(argv[1], argv[2], int(argv[3]))
        return
    path = os.environ.get(SOCKET_ENV)
    status = run_in_server(path, argv) if path else None
    sys.exit(status if status is not None else _run_module("benchmark", argv))


# ---------------------------------------------------------------- server


def start_server(log: str, pythonpath: str) -> subprocess.Popen:
    """Start a server for this workflow run (from its ``onstart``) and point the jobs at it
    (``BENCHMARK_WARM_SOCKET`` in the environment Snakemake gives each job)."""
    folder = tempfile.mkdtemp(prefix="benchmark-warm-")
    path = os.path.join(folder, "socket")
    env = {**os.environ, "PYTHONPATH": pythonpath}
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write(f"warm start server for the jobs of this run (socket {path})\n")
    with open(log, "a") as errors:
        process = subprocess.Popen(["python", "-m", "benchmark.warm", "--serve", path, log, str(os.getpid())],
                                   env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                   start_new_session=True)  # Ctrl-C reaches the jobs, not the server
    os.environ[SOCKET_ENV] = path
    return process


def stop_server(process: subprocess.Popen) -> None:
    """End the server (from the workflow's ``onsuccess`` / ``onerror``); jobs still running go on."""
    path = os.environ.pop(SOCKET_ENV, None)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if path:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def serve(path: str, log: str, parent: int) -> None:
    """Import ``PRELOAD``, listen at ``path``, fork one child per request; return when
    ``parent``, the process that started the server (the workflow), has gone."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    log_file = open(log, "a", buffering=1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop_server: clean up below
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # clients see no socket until it accepts
    log_file.write("listening\n")
    listener.settimeout(1.0)
    jobs: list[int] = []
    try:
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            jobs.append(_fork_job(conn, listener, log_file))
    finally:
        _stop_jobs(jobs, log_file)
        for name in (path, path + ".tmp"):
            if os.path.exists(name):
                os.unlink(name)
        try:
            os.rmdir(os.path.dirname(path))  # start_server's folder
        except OSError:
            pass


def _stop_jobs(jobs: list[int | None], log_file) -> None:
    """SIGTERM to the process group of every fork still running. When the workflow dies
    (``kill -9``, a power cut of the login shell, a preemption) nothing else would stop its
    running jobs, and they would go on writing outputs for seconds to minutes; Snakemake
    marks those outputs incomplete and reruns them, but a rerun started meanwhile would race
    them. A group is signalled only while its leader is still this server's child."""
    me = os.getpid()
    for pid in filter(None, jobs):
        try:
            parent_pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone (or no /proc: nothing to check against, leave it)
        if parent_pid == me:
            try:
                os.killpg(pid, signal.SIGTERM)
                log_file.write(f"pid {pid}: stopped, the workflow has gone\n")
            except ProcessLookupError:
                pass


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    (length,) = HEADER.unpack(header)
    data = b""
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data), fds


def _fork_job(conn: socket.socket, listener: socket.socket, log_file) -> int | None:
    """Fork one job for the request on ``conn``; its pid (None if refused)."""
    try:
        request, fds = _receive(conn)
    except (ConnectionError, OSError, ValueError):
        conn.close()
        return None
    if request["signature"] != _signature() or len(fds) != 3:
        conn.sendall(b"refused\n")
        log_file.write(f"refused (another Python environment or sys.path): {' '.join(request['argv'])}\n")
        conn.close()
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:
        listener.close()
        _run_child(conn, fds, request)  # never returns
    log_file.write(f"pid {pid}: {request['module']} {' '.join(request['argv'])}\n")
    conn.close()
    for fd in fds:
        os.close(fd)
    return pid


def _run_child(conn: socket.socket, fds: list[int], request: dict) -> None:
    """In the fork: become the job's process (group, files, directory, environment,
    arguments), run ``python -m MODULE``, report the exit status, exit."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # as in a fresh process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)  # the client signals the whole group
        conn.sendall(f"{os.getpid()}\n".encode())
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
        sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _fresh_process_state()
        status = _run_module(request["module"], request["argv"])
    except BaseException:  # noqa: BLE001 - setting the job up failed: say why, exit 1
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(f"{status}\n".encode())
        finally:
            os._exit(status)


def _fresh_process_state() -> None:
    """What a fresh interpreter would start from, where the server's differs."""
    import random
    import tempfile

    import numpy as np

    random.seed()
    np.random.seed()
    tempfile.tempdir = None  # TMPDIR is the job's
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if "torch" in sys.modules:
        import torch

        torch.seed()  # a fresh process seeds its default generator from the OS, as numpy and random do
        if threads.isdigit():
            torch.set_num_threads(int(threads))
    if threads.isdigit():
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))  # OpenBLAS / OpenMP read it only when they load


def _run_module(module: str, argv: list[str]) -> int:
    import runpy
    import traceback

    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - a fresh interpreter prints the traceback and exits 1
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    main(sys.argv[1:])
