#!/usr/bin/env bash
# Start or stop the real services the integration tests need, on 127.0.0.1 only:
#   bash .ci/services.sh start|stop [SERVICE...]      (default: every service)
# postgres: a private throwaway cluster on port 5433 with database `ci` (the Prefect server's database in CI).
# slurm: Debian's Slurm 22.05 (munged, slurmctld, slurmd) as a one-node cluster `localhost` with two fake GPUs
#   (GRES gpu:2 bound to /dev/null and /dev/zero); partitions `debug` (default, no time limit) and `short`
#   (default 1 minute, at most 5). No accounting database: the worker reads job states from scontrol.
set -euo pipefail
ACTION=${1:-start}
shift || true
S=${CI_SERVICES_DIR:-${TMPDIR:-/tmp}/aoi-ci-services}
PORT=${CI_PG_PORT:-5433}
log() { printf '[services %s] %s\n' "$(date +%T)" "$*" >&2; }

apt_install() { # apt_install PACKAGE... : install what is missing (the image's policy-rc.d starts no daemon)
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

alive() { # alive PIDFILE: the process exists and is not a zombie (PID 1 on these machines reaps late)
  local pid st
  pid=$(head -1 "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  st=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

wait_for() { # wait_for WHAT SECONDS LOGFILE CMD...: bounded wait; on timeout show the log's tail
  local what=$1 limit=$2 logfile=$3 end
  shift 3
  end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      log "no $what after ${limit}s"
      [ -f "$logfile" ] && tail -20 "$logfile" >&2
      return 1
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------- postgres

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  echo "$bin"
}

start_postgres() {
  local bin d=$S/pg
  bin=$(pg_bin)
  if [ -f "$d/data/postmaster.pid" ] && kill -0 "$(head -1 "$d/data/postmaster.pid")" 2>/dev/null; then
    log "postgres already running"; return 0
  fi
  mkdir -p "$d"; chmod 755 "$S"; chown postgres:postgres "$d"
  [ -f "$d/data/PG_VERSION" ] || runuser -u postgres -- "$bin/initdb" -D "$d/data" -A trust -U postgres --no-sync >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 \
    -o "-p $PORT -k $d -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
  if ! psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "select 1 from pg_database where datname='ci'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "create database ci"
  fi
  log "postgres ready: postgresql://postgres@127.0.0.1:$PORT/ci"
}

stop_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$bin" ] && [ -f "$S/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$S/pg/data" -m fast -w -t 30 stop >/dev/null || true
  fi
}

# ------------------------------------------------------------------------------------------------- slurm

write_slurm_conf() {
  local mem cpus
  mem=$(($(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048))
  cpus=$(nproc)
  cat >/etc/slurm/slurm.conf <<EOF
# Written by .ci/services.sh: a one-node test cluster on 127.0.0.1.
ClusterName=ci
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
MpiDefault=none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MinJobAge=3600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL DefaultTime=00:01:00 MaxTime=00:05:00 State=UP
EOF
  # Fake GPUs: two GRES 'gpu' bound to harmless character devices, so jobs get CUDA_VISIBLE_DEVICES.
  cat >/etc/slurm/gres.conf <<'EOF'
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
NodeName=localhost Name=gpu File=/dev/zero
EOF
}

start_slurm() {
  # openssh: the worker's ssh submission is tested against a private sshd on 127.0.0.1.
  apt_install slurm-wlm slurm-client munge openssh-server openssh-client
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
  chown munge:munge /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  write_slurm_conf
  alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  wait_for munge 10 /dev/null sh -c 'munge -n | unmunge'
  alive /run/slurmctld.pid || (cd /tmp && slurmctld)
  wait_for slurmctld 30 /var/log/slurm/slurmctld.log scontrol ping
  alive /run/slurmd.pid || (cd /tmp && slurmd -N localhost)
  # A node an earlier test run left DOWN or DRAINED goes back into service.
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  wait_for "idle Slurm node" 60 /var/log/slurm/slurmd.log sh -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
  log "slurm ready: $(sinfo -h -o '%P %a %l %D %t' | tr '\n' ' ')"
}

stop_slurm() {
  local f
  if command -v scancel >/dev/null && alive /run/slurmctld.pid; then scancel --user=root 2>/dev/null || true; fi
  for f in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if alive "$f"; then kill "$(head -1 "$f")" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do alive "$f" || break; sleep 0.2; done
  done
  # The next start begins with an empty queue and job ids from 1.
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
}

# ------------------------------------------------------------------------------------------------- main

KNOWN="postgres slurm"
SERVICES=("$@")
[ ${#SERVICES[@]} -gt 0 ] || read -r -a SERVICES <<<"$KNOWN"
for service in "${SERVICES[@]}"; do
  [[ " $KNOWN " == *" $service "* ]] || { echo "unknown service $service (known: $KNOWN)" >&2; exit 2; }
done
case "$ACTION" in
  start) mkdir -p "$S"; for service in "${SERVICES[@]}"; do "start_$service"; done ;;
  stop) for service in "${SERVICES[@]}"; do "stop_$service"; done; [ $# -gt 0 ] || rm -rf "$S" ;;
  *) echo "usage: $0 start|stop [SERVICE...] (services: $KNOWN)" >&2; exit 2 ;;
esac
