"""How a pretraining job starts its trainer: one torchrun per node of a SLURM allocation.

The pretrain rule runs the trainer directly (one process), under ``torchrun --standalone``
(one process per GPU of one node), or, with ``pretrain.nodes`` above 1, through this
module: ``python -m benchmark.launch --nodes N --procs-per-node P --cpus-per-task T --
pretrain ...`` runs in the job's batch step on the allocation's first node and starts
``srun`` with one task per node; each task is a torchrun agent, and the agents meet at a
c10d rendezvous hosted on this first node (its hostname, a port free here). torchrun then
sets RANK and WORLD_SIZE for benchmark/distributed.py as on one node.

A multi-node job needs an allocation to run in: outside one (Snakemake's local
executor), this module says so in one line and exits 2, instead of letting ``srun``
make an allocation of its own or train on one machine what was planned for several.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys


class NotInAllocation(Exception):
    pass


def free_port() -> int:
    """A TCP port free on this host now (the rendezvous store binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def multinode_command(nodes: int, procs_per_node: int, cpus_per_task: int, gpus_per_node: int,
                      trainer_args: list[str], env: dict[str, str], head: str, port: int) -> list[str]:
    """``srun`` (one task per node) of ``torchrun`` (``procs_per_node`` trainers each)."""
    if not env.get("SLURM_JOB_ID"):
        raise NotInAllocation(f"error: pretrain.nodes is {nodes}: a multi-node training job runs only inside a "
                              "SLURM allocation (snakemake --workflow-profile workflow/profiles/slurm, "
                              "docs/cluster.md); set pretrain.nodes: 1 to train on this machine")
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
            f"--cpus-per-task={cpus_per_task}", "--kill-on-bad-exit=1"]
    if gpus_per_node:
        srun.append(f"--gpus-per-node={gpus_per_node}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                f"--nproc-per-node={procs_per_node}", "--rdzv-backend=c10d", f"--rdzv-endpoint={head}:{port}",
                f"--rdzv-id=benchmark-{env['SLURM_JOB_ID']}", "-m", "benchmark"]
    return srun + torchrun + trainer_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--procs-per-node", type=int, required=True, help="trainer processes per node (GPUs, or 1)")
    parser.add_argument("--cpus-per-task", type=int, required=True, help="CPU cores of each node's task")
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then the benchmark command, e.g. pretrain ...")
    args = parser.parse_args(argv)
    trainer_args = args.trainer_args[1:] if args.trainer_args[:1] == ["--"] else args.trainer_args
    try:
        command = multinode_command(args.nodes, args.procs_per_node, args.cpus_per_task, args.gpus_per_node,
                                    trainer_args, dict(os.environ), socket.gethostname(), free_port())
    except NotInAllocation as exc:  # on the console (the rule's stdout) and in the job's log (its stderr)
        print(exc)
        print(exc, file=sys.stderr)
        sys.exit(2)
    print("launch:", shlex.join(command), file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
