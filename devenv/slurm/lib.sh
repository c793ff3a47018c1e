# shellcheck shell=bash
# Shared helpers for devenv/slurm/{up,down,ctl}. Sourced, never executed.
# Layout, configs and start order follow /work/shared/docs/slurm-local-cluster.md.

set -euo pipefail

STATE_DIR="${WSA_SLURM_STATE:-/var/lib/wsa-slurm}"
CLUSTER=testcluster
HOST="$(hostname -s)"
READY_TIMEOUT="${WSA_SLURM_READY_TIMEOUT:-60}"
MYSQL_SOCK="$STATE_DIR/mysql-run/mysqld.sock"
MUNGE_PIDFILE=/run/munge/munged.pid
# Marker: munged may belong to the machine; stop it only if we started it.
MUNGE_MARKER="$STATE_DIR/run/munged.started-by-wsa"
TEST_USERS=(wsa_alice wsa_bob wsa_carol wsa_dave)
PACKAGES=(slurm-wlm slurmdbd mariadb-server munge)

log() { printf '[wsa-slurm] %s\n' "$*" >&2; }
die() { printf '[wsa-slurm] ERROR: %s\n' "$*" >&2; exit 1; }

require_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

pidfile_of() {
    case "$1" in
        munged) echo "$MUNGE_PIDFILE" ;;
        mariadbd) echo "$STATE_DIR/mysql-run/mysqld.pid" ;;
        slurmdbd | slurmctld | slurmd) echo "$STATE_DIR/run/$1.pid" ;;
        *) die "unknown daemon: $1" ;;
    esac
}

logfile_of() {
    case "$1" in
        munged) echo "/var/log/munge/munged.log" ;;
        mariadbd) echo "$STATE_DIR/mysql/mysqld.err" ;;
        slurmdbd | slurmctld | slurmd) echo "$STATE_DIR/log/$1.log" ;;
        *) die "unknown daemon: $1" ;;
    esac
}

# Prints the pid when the daemon is alive: pid file -> live process with the right
# comm that is not a zombie (PID 1 here reaps late, so zombies linger ~2 s).
daemon_pid() {
    local name=$1 pf pid state
    pf=$(pidfile_of "$name")
    [[ -r $pf ]] || return 1
    pid=$(<"$pf") 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z ]] || return 1
    echo "$pid"
}

is_running() { daemon_pid "$1" >/dev/null; }

# wait_for <what> <logfile> <command...>: poll every 0.2 s until the command succeeds.
wait_for() {
    local what=$1 logf=$2
    shift 2
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "$what not ready after ${READY_TIMEOUT}s; see $logf"
        fi
        sleep 0.2
    done
}

stop_daemon() {
    local name=$1 pid pf i
    pf=$(pidfile_of "$name")
    if ! pid=$(daemon_pid "$name"); then
        rm -f "$pf"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do # 300 x 0.05 s = 15 s
        is_running "$name" || break
        sleep 0.05
    done
    if is_running "$name"; then
        log "$name did not stop after 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            is_running "$name" || break
            sleep 0.05
        done
    fi
    rm -f "$pf"
}

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# apt-get install only what is missing; policy-rc.d keeps the packages' init scripts
# from starting a system MariaDB/munge/slurm that would clash with ours on the same ports.
install_packages() {
    local missing=() p
    for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    log "installing: ${missing[*]}"
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if ((rc == 0)); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    fi
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get failed (rc $rc) installing ${missing[*]}"
}

# install_file <mode> <owner> <dest>: content on stdin; rewritten only when it differs,
# so an `up` against a running cluster does not touch mtimes. Echoes "changed" if so.
install_file() {
    local mode=$1 owner=$2 dest=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest" &&
        [[ $(stat -c '%a %U:%G' "$dest") == "$mode $owner" ]]; then
        rm -f "$tmp"
        return 0
    fi
    install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$tmp" "$dest"
    rm -f "$tmp"
    echo changed
}

write_configs() {
    local changed=""
    install -d -m 755 "$STATE_DIR" "$STATE_DIR/dev"
    install -d -m 755 -o slurm -g slurm "$STATE_DIR/run" "$STATE_DIR/log"
    install -d -m 755 -o slurm -g slurm "$STATE_DIR/spool" "$STATE_DIR/spool/slurmctld"
    install -d -m 755 "$STATE_DIR/spool/slurmd"
    install -d -m 755 -o mysql -g mysql "$STATE_DIR/mysql" "$STATE_DIR/mysql-run"
    install -d -m 755 /etc/slurm
    local g
    for g in gpu0 gpu1; do
        # Fake GPUs must be char devices: plain files or File-less Count= are dropped in 22.05.
        [[ -c $STATE_DIR/dev/$g ]] || { rm -f "$STATE_DIR/dev/$g"; mknod "$STATE_DIR/dev/$g" c 1 3; }
    done

    changed+=$(install_file 644 root:root /etc/slurm/slurm.conf <<CONF
# Written by devenv/slurm/up. Minimal single-node Slurm 22.05 test cluster (no systemd, no cgroups).
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/spool/slurmctld
SlurmdSpoolDir=$STATE_DIR/spool/slurmd
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
SchedulerType=sched/backfill
# the default batch_sched_delay=3 limits throughput to ~2 jobs / 3 s
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,safe
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# GrpTRESMins enforcement needs priority/multifactor (usage is tracked by its decay thread)
PriorityType=priority/multifactor
PriorityDecayHalfLife=0
PriorityUsageResetPeriod=NONE
PriorityCalcPeriod=1
GresTypes=gpu
# the node advertises 16 CPUs on a small machine so many tiny test jobs run at once
SlurmdParameters=config_overrides
NodeName=$HOST CPUs=16 Boards=1 SocketsPerBoard=1 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=16000 Gres=gpu:2 State=UNKNOWN
# with AccountingStorageEnforce=safe + GrpTRESMins a job without a time limit never starts
PartitionName=debug Nodes=$HOST Default=YES DefaultTime=10 MaxTime=INFINITE State=UP
CONF
)
    changed+=$(install_file 644 root:root /etc/slurm/gres.conf <<CONF
# Written by devenv/slurm/up. Fake GPUs: File= must be a char device (1,3 like /dev/null).
AutoDetect=off
NodeName=$HOST Name=gpu File=$STATE_DIR/dev/gpu[0-1]
CONF
)
    changed+=$(install_file 600 slurm:slurm /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$STATE_DIR/log/slurmdbd.log
PidFile=$STATE_DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmpass
StorageLoc=slurm_acct_db
CONF
)
    if [[ -n $changed ]] && { is_running slurmctld || is_running slurmd || is_running slurmdbd; }; then
        log "WARNING: configs changed while daemons run; run devenv/slurm/down && devenv/slurm/up to apply"
    fi
}

ensure_host_resolves() {
    getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
}

start_munged() {
    is_running munged && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -m 700 -o munge -g munge /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -m 755 -o munge -g munge /run/munge
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    touch "$MUNGE_MARKER"
    wait_for munged /var/log/munge/munged.log sh -c 'munge -n | unmunge'
}

mysql_ping() { mariadb-admin --socket="$MYSQL_SOCK" ping; }

start_mariadbd() {
    if ! is_running mariadbd; then
        if [[ ! -d $STATE_DIR/mysql/mysql ]]; then
            log "initialising MariaDB datadir"
            mariadb-install-db --user=mysql --datadir="$STATE_DIR/mysql" \
                --auth-root-authentication-method=socket --skip-test-db >"$STATE_DIR/log/mariadb-install-db.log" 2>&1 ||
                die "mariadb-install-db failed; see $STATE_DIR/log/mariadb-install-db.log"
        fi
        log "starting mariadbd"
        # mariadbd does not daemonize itself.
        setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE_DIR/mysql" \
            --socket="$MYSQL_SOCK" --pid-file="$STATE_DIR/mysql-run/mysqld.pid" \
            --bind-address=127.0.0.1 --port=3306 --log-error="$STATE_DIR/mysql/mysqld.err" --skip-name-resolve \
            --innodb-buffer-pool-size=1G --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
            --max-allowed-packet=64M </dev/null >/dev/null 2>&1
        wait_for mariadbd "$STATE_DIR/mysql/mysqld.err" mysql_ping
        wait_for "mariadbd pid file" "$STATE_DIR/mysql/mysqld.err" is_running mariadbd
    fi
    if [[ ! -e $STATE_DIR/mysql-run/.slurm-user-created ]]; then
        mariadb --socket="$MYSQL_SOCK" -u root -e "
          CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpass';
          CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpass';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
            die "creating the MariaDB slurm user failed; see $STATE_DIR/mysql/mysqld.err"
        touch "$STATE_DIR/mysql-run/.slurm-user-created"
    fi
}

start_slurmdbd() {
    if ! is_running slurmdbd; then
        log "starting slurmdbd"
        /usr/sbin/slurmdbd || die "slurmdbd failed to start; see $(logfile_of slurmdbd)"
    fi
    wait_for slurmdbd "$(logfile_of slurmdbd)" sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        log "adding cluster $CLUSTER"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurmctld() {
    if ! is_running slurmctld; then
        log "starting slurmctld"
        /usr/sbin/slurmctld || die "slurmctld failed to start; see $(logfile_of slurmctld)"
    fi
    wait_for slurmctld "$(logfile_of slurmctld)" sh -c 'scontrol ping | grep -q "is UP"'
}

node_ready() {
    local st
    st=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null) || return 1
    case "$st" in
        idle | mixed | allocated | completing) return 0 ;;
        drained | draining | down | 'down*' | 'drain*' | 'inval*' | 'inval' | 'drained*' | 'idle+drain' | 'mixed+drain')
            scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            return 1 ;;
        *) return 1 ;;
    esac
}

start_slurmd() {
    if ! is_running slurmd; then
        log "starting slurmd"
        /usr/sbin/slurmd || die "slurmd failed to start; see $(logfile_of slurmd)"
    fi
    wait_for "slurmd (node $HOST idle)" "$(logfile_of slurmd)" node_ready
}

cluster_registered() {
    sacctmgr -n -P list cluster format=cluster,controlhost | grep -q "^$CLUSTER|."
}

ensure_test_users() {
    local u
    for u in "${TEST_USERS[@]}"; do
        id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"
    done
}
