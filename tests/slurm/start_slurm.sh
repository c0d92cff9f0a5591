#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian's slurm-wlm and munge, run as
# root) for the SLURM integration test; idempotent. .ci/run starts it before the tests, so
# that no `snakemake` command waits for an absent controller. Install first:
#   apt-get install -y slurm-wlm munge
# The node gets every core and most of the memory; accounting is off, so the Snakemake
# SLURM executor queries job states with squeue (MinJobAge keeps finished jobs visible).
set -euo pipefail

node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))

mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge /var/log/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=benchmark
SlurmctldHost=${node}
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
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${node} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
# The partitions workflow/profiles/slurm names, both on this one node.
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF

if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force 2>/dev/null
if pgrep -x slurmctld >/dev/null; then scontrol reconfigure; else slurmctld; fi
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'; then
        echo "slurm: node ${node} up (${cpus} CPUs, ${mem_mb} MB)"
        exit 0
    fi
    scontrol update nodename="${node}" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm: node ${node} did not come up; see /var/log/slurm/" >&2
exit 1
