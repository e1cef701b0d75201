#!/usr/bin/env bash
# Start or stop the real services the integration tests need, on 127.0.0.1 only:
#   bash .ci/services.sh start|stop [SERVICE...]      (default: every service)
# postgres: a private throwaway cluster on port 5433 with database `ci` (the Prefect server's database in CI).
# slurm: Debian's Slurm 22.05 (munged, slurmctld, slurmd) as a one-node cluster `localhost` with two fake GPUs
#   (GRES gpu:2 bound to /dev/null and /dev/zero); partitions `debug` (default, no time limit) and `short`
#   (default 1 minute, at most 5). No accounting database: the worker reads job states from scontrol.
# s3: a real S3 server, Ceph's RADOS Gateway (Debian's Ceph 16) on http://127.0.0.1:7480, with the user `ci`
#   (access key $CI_S3_ACCESS_KEY, secret $CI_S3_SECRET_KEY; defaults below) for the publishing tests.
# docker: a dockerd (Debian docker.io) without a bridge or NAT (containers use --network host), and the job
#   image localhost/aoi-pipeline-job:latest built from a debootstrap root file system (no registry needed) by
#   deployments/docker/build-image.sh. The root file system is kept in $CI_CACHE_DIR (default
#   /var/cache/aoi-ci) only to go faster on the same machine; images stay in dockerd's store.
# browser: Debian's chromium and chromium-driver (installed only) for the tests that click the Prefect UI.
set -euo pipefail
ACTION=${1:-start}
shift || true
S=${CI_SERVICES_DIR:-${TMPDIR:-/tmp}/aoi-ci-services}
PORT=${CI_PG_PORT:-5433}
CACHE=${CI_CACHE_DIR:-/var/cache/aoi-ci}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$S/pids" "$S/logs"
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

# ---------------------------------------------------------------------------------------------- s3
# A real S3 implementation: Debian's Ceph RADOS Gateway on one monitor and one memstore OSD (objects in RAM,
# capped by CI_S3_BYTES), cephx off, SigV4 auth by RGW. Configuration, data and logs stay under $S/ceph
# (CEPH_CONF points there; /etc/ceph is not touched). memstore loses everything when the OSD stops, so a start
# that finds no healthy gateway builds a fresh cluster (about 15 s).
S3_PORT=${CI_S3_PORT:-7480}
S3_MON_PORT=${CI_S3_MON_PORT:-3300}
S3_ACCESS_KEY=${CI_S3_ACCESS_KEY:-aoi-ci-access}
S3_SECRET_KEY=${CI_S3_SECRET_KEY:-aoi-ci-secret-do-not-log}
export CEPH_CONF=$S/ceph/ceph.conf

s3_up() { curl -fs -o /dev/null "http://127.0.0.1:$S3_PORT/"; }

start_s3() {
  local c=$S/ceph fsid
  apt_install ceph-mon ceph-osd radosgw ceph-common curl
  if alive "$c/run/client.rgw.a.pid" && s3_up; then
    s3_user
    log "s3 already running: http://127.0.0.1:$S3_PORT"
    return 0
  fi
  stop_s3
  mkdir -p "$c"/{mon/ceph-a,osd/ceph-0,run,log,rgw}
  fsid=$(cat /proc/sys/kernel/random/uuid)
  s3_conf "$c" "$fsid" >"$CEPH_CONF"
  ceph-authtool --create-keyring "$c/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$S3_MON_PORT]" --fsid "$fsid" "$c/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$c/monmap" --keyring "$c/mon.keyring" >"$c/log/mon-mkfs.log" 2>&1
  ceph-mon -i a
  wait_for ceph-mon 60 "$c/log/mon.a.log" timeout 5 ceph -s --connect-timeout 3
  [ "$(ceph osd create)" = 0 ]
  ceph-osd -i 0 --mkfs >"$c/log/osd-mkfs.log" 2>&1
  ceph-osd -i 0 >>"$c/log/osd-mkfs.log" 2>&1
  wait_for ceph-osd 60 "$c/log/osd.0.log" sh -c 'ceph osd stat | grep -q "1 up"'
  radosgw -n client.rgw.a
  wait_for radosgw 180 "$c/log/client.rgw.a.log" s3_up
  s3_user
  log "s3 ready: http://127.0.0.1:$S3_PORT (Ceph RGW), access key $S3_ACCESS_KEY"
}

s3_conf() { # s3_conf DIR FSID: a one-node cluster, cephx off; crc mode, else RGW cannot fetch its mon config
  cat <<CONF
[global]
fsid = $2
mon initial members = a
mon host = v2:127.0.0.1:$S3_MON_PORT/0
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# The monitor stops below 5 % free disk by default; CI machines may have little.
mon data avail warn = 1
mon data avail crit = 0
run dir = $1/run
pid file = $1/run/\$name.pid
admin socket = $1/run/\$name.asok
log file = $1/log/\$name.log
[mon]
mon data = $1/mon/ceph-\$id
[osd]
osd data = $1/osd/ceph-\$id
osd objectstore = memstore
memstore device bytes = ${CI_S3_BYTES:-2147483648}
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$S3_PORT
rgw data = $1/rgw
rgw dns name = localhost
CONF
}

s3_user() { # the test user, with the keys the tests get from CI (created once per cluster)
  radosgw-admin user info --uid=ci >/dev/null 2>&1 && return 0
  radosgw-admin user create --uid=ci --display-name=ci \
    --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >/dev/null
}

stop_s3() {
  local name pidfile
  for name in client.rgw.a osd.0 mon.a; do
    pidfile=$S/ceph/run/$name.pid
    alive "$pidfile" && kill "$(head -1 "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pidfile" || break; sleep 0.2; done
    alive "$pidfile" && kill -9 "$(head -1 "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$S/ceph"
}

# ------------------------------------------------------------------------------------------------ docker
start_docker() {
  apt_install docker.io iptables debootstrap
  if docker version >/dev/null 2>&1 && ! alive "$S/pids/dockerd.pid"; then
    log "a Docker engine is already running (not started here): using it"
  else
    start_dockerd
  fi
  AOI_IMAGE_CACHE=$CACHE bash "$REPO/deployments/docker/build-image.sh" --offline >"$S/logs/image.log" 2>&1 \
    || { tail -40 "$S/logs/image.log" >&2; return 1; }
  log "docker ready: job image $(docker image inspect -f '{{.Id}}' localhost/aoi-pipeline-job:latest | cut -c1-19)"
}

start_dockerd() {
  # Without a real GPU stack, dockerd accepts GPU device requests only if an NVIDIA prestart hook is on its
  # PATH: a no-op one in a private directory stands in for it (the containers see NVIDIA_VISIBLE_DEVICES).
  local path=$PATH
  if ! command -v nvidia-container-runtime-hook >/dev/null; then
    mkdir -p "$S/fake-gpu-bin"
    printf '#!/bin/sh\n# No GPU on this machine: accept the prestart call and do nothing.\ncat >/dev/null\nexit 0\n' \
      >"$S/fake-gpu-bin/nvidia-container-runtime-hook"
    chmod +x "$S/fake-gpu-bin/nvidia-container-runtime-hook"
    path=$S/fake-gpu-bin:$PATH
  fi
  if ! alive "$S/pids/dockerd.pid"; then
    # No bridge and no NAT: these machines may not route private ranges; containers use the host network.
    (PATH=$path setsid dockerd --iptables=false --ip6tables=false --bridge=none \
      --pidfile "$S/dockerd.pid" >"$S/logs/dockerd.log" 2>&1 </dev/null &
      echo $! >"$S/pids/dockerd.pid")
  fi
  wait_for dockerd 60 "$S/logs/dockerd.log" docker version
  log "dockerd ready (unix:///var/run/docker.sock)"
}

stop_docker() {
  local pidfile=$S/pids/dockerd.pid
  if alive "$pidfile"; then
    # Containers the tests left behind (there should be none) go with the daemon; images stay as a cache.
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true
    kill "$(head -1 "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 150); do alive "$pidfile" || break; sleep 0.2; done
    alive "$pidfile" && kill -9 "$(head -1 "$pidfile")" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

status_docker() { docker version >/dev/null 2>&1 && docker image inspect localhost/aoi-pipeline-job:latest >/dev/null 2>&1; }

# ------------------------------------------------------------------------------------------------ browser
# Debian's Chromium and chromedriver for the UI approval tests (tests/integration/test_ui_approval.py, Selenium);
# nothing is downloaded by Selenium or Playwright. No daemon: the tests start the browser themselves.
start_browser() {
  apt_install chromium chromium-driver
  log "browser ready: $(chromium --version 2>/dev/null | head -1)"
}

stop_browser() { :; }

# ------------------------------------------------------------------------------------------------- main
KNOWN="postgres slurm s3 docker browser"
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
