#!/usr/bin/env bash
# Start a two-node SLURM cluster on this one machine (Debian's slurm-wlm and munge, run as
# root) for the SLURM integration tests; idempotent. .ci/run starts it before the tests, so
# that no `snakemake` command waits for an absent controller. Install first:
#   apt-get install -y slurm-wlm munge
# Two slurmd daemons share the host, each started with `slurmd -N <node>` and told apart by
# its own port, spool folder, pid file and log (%n in slurm.conf); both have NodeAddr
# 127.0.0.1, so nothing but loopback is used. Debian's 22.05 build accepts several slurmd
# per host (docs/cluster.md says how this was checked). Each node gets every core and half
# of the memory: a job of either node, or a two-node job, runs on the same two cores.
# Accounting is off, so the Snakemake SLURM executor queries job states with squeue
# (MinJobAge keeps finished jobs visible).
set -euo pipefail

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( ($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048) / 2 ))
nodes=(node1 node2)

mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge /var/log/munge
wanted=$(mktemp)
cat > "$wanted" <<CONF
ClusterName=benchmark
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=900
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
NodeName=node1 NodeHostname=${host} NodeAddr=127.0.0.1 Port=6821 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
NodeName=node2 NodeHostname=${host} NodeAddr=127.0.0.1 Port=6822 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
# The partitions workflow/profiles/slurm names, both on both nodes.
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A new or changed cluster (e.g. the earlier one-node one): stop every daemon, start afresh.
if ! cmp -s "$wanted" /etc/slurm/slurm.conf; then
    pkill -x slurmctld || true
    pkill -x slurmd || true
    for _ in $(seq 30); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
    mv "$wanted" /etc/slurm/slurm.conf
    clear_state=-c
else
    rm -f "$wanted"
    clear_state=
fi
chmod 644 /etc/slurm/slurm.conf

if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force 2>/dev/null
alive /run/slurmctld.pid || slurmctld $clear_state
for node in "${nodes[@]}"; do
    mkdir -p "/var/lib/slurm/slurmd/${node}"
    alive "/run/slurmd-${node}.pid" || slurmd -N "$node"
done

for _ in $(seq 60); do
    up=$(sinfo -h -N -p cpu -o '%N %T' 2>/dev/null | grep -c -E ' (idle|mixed|allocated)$' || true)
    if [ "$up" -ge "${#nodes[@]}" ]; then
        echo "slurm: nodes ${nodes[*]} up on ${host} (${cpus} CPUs, ${mem_mb} MB each)"
        exit 0
    fi
    for node in "${nodes[@]}"; do scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true; done
    sleep 1
done
echo "slurm: nodes ${nodes[*]} did not come up; see /var/log/slurm/" >&2
exit 1
