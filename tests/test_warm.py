"""The warm-start server (benchmark/warm.py): a job forked from it prints, writes and exits
as it would in its own process; clients that run other code, and runs without a server, are
served in their own process; signals reach the job; the server ends with its workflow.
That a whole workflow's outputs are the same warm and cold is tested in test_workflow.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.warm import SOCKET_ENV, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server started as the workflow starts it; (socket path, its log)."""
    log = tmp_path_factory.mktemp("warm") / "warm_start.log"
    saved = os.environ.get(SOCKET_ENV)
    process = start_server(str(log), str(REPO))
    path = os.environ[SOCKET_ENV]
    _wait_for(lambda: os.path.exists(path))  # it listens once its imports are done
    yield path, log
    stop_server(process)
    if saved is not None:
        os.environ[SOCKET_ENV] = saved
    assert not os.path.exists(path)


def _run(argv: list[str], socket_path: str | None, **env) -> subprocess.CompletedProcess:
    environment = {**ENV, **env}
    if socket_path:
        environment[SOCKET_ENV] = socket_path
    else:
        environment.pop(SOCKET_ENV, None)
    return subprocess.run([sys.executable, "-m", "benchmark.warm", *argv], capture_output=True, text=True,
                          cwd=REPO, env=environment)


def test_a_forked_job_prints_and_exits_as_its_own_process_does(server):
    path, log = server
    listing = ["models", "--config", "config/ci.yaml"]
    warm, cold = _run(listing, path), _run(listing, None)
    assert warm.returncode == cold.returncode == 0 and "mama" in warm.stdout and warm.stdout == cold.stdout
    missing = ["models", "--config", "no/such/config.yaml"]
    warm, cold = _run(missing, path), _run(missing, None)
    assert warm.returncode == cold.returncode == 2
    assert warm.stderr == cold.stderr == "error: config: no/such/config.yaml not found\n"
    forked = log.read_text()
    assert f"benchmark {' '.join(listing)}" in forked and f"benchmark {' '.join(missing)}" in forked


def test_a_client_running_other_code_or_without_a_server_runs_in_its_own_process(server, tmp_path):
    path, log = server
    other = _run(["models", "--config", "config/ci.yaml"], path, PYTHONPATH=f"{REPO}:{tmp_path}")
    assert other.returncode == 0 and "mama" in other.stdout
    assert "refused (another Python environment or sys.path): models --config config/ci.yaml" in log.read_text()
    gone = _run(["models", "--config", "config/ci.yaml"], str(tmp_path / "no-server"))
    assert gone.returncode == 0 and gone.stdout == other.stdout


def test_a_signal_to_the_client_ends_the_job_and_its_workers(server, tmp_path):
    path, log = server
    before = log.read_text()
    client = _long_synth_job(tmp_path, path)
    _wait_for(lambda: "benchmark synth" in log.read_text()[len(before):])
    job = int(log.read_text()[len(before):].split("pid ")[1].split(":")[0])
    _wait_for(lambda: (tmp_path / "embed").exists())
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM
    _wait_for(lambda: _group_gone(job), 30)


def _long_synth_job(tmp_path: Path, socket_path: str) -> subprocess.Popen:
    """A client for a long job with worker processes: synthetic data for 300 patients on 2 workers."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["results"], config["data"]["embed"]["root"] = str(tmp_path / "results"), str(tmp_path / "embed")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen([sys.executable, "-m", "benchmark.warm", "synth", "--config", str(tmp_path / "config.yaml"),
                             "--dataset", "embed", "--out", str(tmp_path / "embed")],
                            cwd=REPO, env={**ENV, SOCKET_ENV: socket_path}, stderr=subprocess.PIPE, text=True)


def _group_gone(job: int) -> bool:
    try:
        os.killpg(job, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_server_ends_when_the_workflow_that_started_it_ends(tmp_path):
    workflow = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from benchmark.warm import start_server; "
         "print(start_server(sys.argv[1], sys.argv[2]).pid, flush=True); time.sleep(600)",
         str(tmp_path / "warm.log"), str(REPO)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    server_pid = int(workflow.stdout.readline())
    _wait_for(lambda: "socket" in (tmp_path / "warm.log").read_text())
    workflow.kill()  # as when Snakemake itself is killed: no onsuccess or onerror runs
    workflow.wait()

    def server_gone() -> bool:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{server_pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped

    _wait_for(server_gone, 60)


def test_a_workflow_killed_mid_job_takes_its_running_jobs_with_it(tmp_path):
    """kill -9 of the workflow: the server ends and stops the job it was running, which would
    otherwise go on writing into the results folder after the workflow has gone."""
    workflow = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time; from benchmark.warm import SOCKET_ENV, start_server; "
         "start_server(sys.argv[1], sys.argv[2]); print(os.environ[SOCKET_ENV], flush=True); time.sleep(600)",
         str(tmp_path / "warm.log"), str(REPO)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    path = workflow.stdout.readline().strip()
    _wait_for(lambda: os.path.exists(path))
    client = _long_synth_job(tmp_path, path)
    _wait_for(lambda: "benchmark synth" in (tmp_path / "warm.log").read_text())
    job = int((tmp_path / "warm.log").read_text().split("pid ")[1].split(":")[0])
    workflow.kill()
    workflow.wait()
    assert client.wait(timeout=60) != 0  # the job ended without finishing
    _wait_for(lambda: _group_gone(job), 30)
    assert f"pid {job}: stopped, the workflow has gone" in (tmp_path / "warm.log").read_text()
    assert not (tmp_path / "embed" / "SYNTHETIC.json").exists()


def test_a_fork_takes_the_jobs_thread_count_and_reseeds_the_generators_as_a_fresh_process():
    # two forks start from the server's generator states: without reseeding they would draw alike
    code = ("import os, random, numpy, torch; from threadpoolctl import threadpool_info; "
            "from benchmark.warm import _fresh_process_state; "
            "os.environ['OMP_NUM_THREADS'] = '1'; states = torch.get_rng_state(), numpy.random.get_state(), "
            "random.getstate(); draws = []\n"
            "for _ in range(2):\n"
            "    torch.set_rng_state(states[0]); numpy.random.set_state(states[1]); random.setstate(states[2])\n"
            "    _fresh_process_state(); draws.append((torch.rand(1).item(), numpy.random.rand(), random.random()))\n"
            "print(torch.get_num_threads(), sorted({i['num_threads'] for i in threadpool_info()}), "
            "all(a != b for a, b in zip(*draws)), sep='|')")
    forked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert forked.returncode == 0, forked.stderr
    assert forked.stdout.strip() == "1|[1]|True"
