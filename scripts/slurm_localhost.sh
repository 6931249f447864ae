#!/usr/bin/env bash
# A real single-node SLURM (slurmctld + slurmd + munge) on this machine, for tests and demos.
#   scripts/slurm_localhost.sh install   # Debian packages (root)
#   scripts/slurm_localhost.sh start     # config under $SLURM_LOCAL_DIR (default /tmp/campaign-slurm), daemons up
#   scripts/slurm_localhost.sh stop
# Works without systemd or cgroups (proctrack/linuxproc, task/none). The node advertises two
# "gpu" GRES backed by stand-in device nodes (copies of /dev/null), so jobs asking --gres=gpu:N
# are scheduled and accounted as on a GPU partition; the work in them still runs on the CPU.
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-/tmp/campaign-slurm}
CONF=/etc/slurm/slurm.conf

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 slurmctld slurmd slurm-client munge
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --force
    fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
    echo "munge did not start" >&2; exit 1
}

write_conf() {
    local host cpus mem
    host=$(hostname)
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( mem * 85 / 100 ))
    mkdir -p "$DIR"/state/ctld "$DIR"/state/d "$DIR"/run "$DIR"/log "$DIR"/dev /etc/slurm
    for i in 0 1; do [ -e "$DIR/dev/gpu$i" ] || mknod "$DIR/dev/gpu$i" c 1 3; done
    cat > "$CONF" <<CONF
ClusterName=campaign
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    echo "NodeName=$host Name=gpu File=$DIR/dev/gpu[0-1]" > /etc/slurm/gres.conf
}

start() {
    install_packages
    start_munge
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then echo "SLURM already up"; return; fi
    write_conf
    /usr/sbin/slurmctld -i
    /usr/sbin/slurmd
    for _ in $(seq 100); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            srun -t 1 true && echo "SLURM up: $(sinfo -h -o '%P %D %t %c CPUs %m MB')" && return
        fi
        sleep 0.2
    done
    echo "SLURM did not come up; logs in $DIR/log" >&2
    tail -n 20 "$DIR"/log/*.log >&2 || true
    exit 1
}

stop() {
    scontrol shutdown 2>/dev/null || true
    for _ in $(seq 50); do
        [ -e "$DIR/run/slurmctld.pid" ] || [ -e "$DIR/run/slurmd.pid" ] || break
        sleep 0.1
    done
    if [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
