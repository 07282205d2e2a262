#!/usr/bin/env bash
# deploy/slurm-local.sh - a real single-machine Slurm cluster for trying and
# testing `surge launch` with scheduler "slurm": munged + slurmctld + one or
# more slurmd from Debian's packages (Slurm 22.05), started in the
# background without systemd or cgroups. Needs root (the daemons and the
# jobs run as root). docs/slurm.md explains how surge uses it.
#
# Usage:
#   slurm-local.sh install  apt-get install the packages (munge slurmctld
#                           slurmd slurm-client; + slurmdbd mariadb-server
#                           with SLURM_LOCAL_ACCOUNTING=slurmdbd)
#   slurm-local.sh start    write the config, start the daemons, wait until
#                           every node is idle, print "export SLURM_CONF=..."
#                           on stdout (progress goes to stderr). A no-op when
#                           the same cluster is already up; with other
#                           settings it restarts the cluster (jobs lost).
#                           Fails, naming the packages, when they are missing.
#   slurm-local.sh stop     cancel the jobs, stop the daemons this script
#                           started (found by the pid files it wrote)
#   slurm-local.sh status   show the daemons, sinfo and squeue; exit 0 if up
#   slurm-local.sh env      print the environment line only
#
# In a script (eval "$(... start)" alone would hide a failed start):
#   env=$(deploy/slurm-local.sh start) || exit 1; eval "$env"
#   trap 'deploy/slurm-local.sh stop' EXIT
#
# Everything lives under $SLURM_LOCAL_DIR: config, a private munge key and
# socket, state, spool, logs, pid files. Nothing is written under /etc and a
# system munged or slurmctld, if any, is neither used nor disturbed. Client
# commands find the cluster through SLURM_CONF; inside jobs Slurm sets it.
#
# Settings (environment):
#   SLURM_LOCAL_DIR          base directory, absolute   [/tmp/surge-slurm-local]
#   SLURM_LOCAL_NODES        number of nodes (slurmd daemons)  [1]
#                            1: the node is named after this host;
#                            2 or more: node1..nodeN, all on 127.0.0.1 (these
#                            names do not resolve: see docs/slurm.md)
#   SLURM_LOCAL_CPUS         CPUs announced per node, may exceed the real
#                            cores (SlurmdParameters=config_overrides)  [8]
#   SLURM_LOCAL_MPI_DEFAULT  MpiDefault: none, pmix or pmi2    [none]
#                            (Debian's Open MPI 4.1 runs under srun only with
#                            pmix; surge passes --mpi explicitly anyway)
#   SLURM_LOCAL_ACCOUNTING   none: no database; plain "sacct" fails with
#                            "Slurm accounting storage is disabled" while
#                            "sacct -c" reads the job completion log.
#                            slurmdbd: also run MariaDB + slurmdbd, private
#                            to $SLURM_LOCAL_DIR, so that plain sacct works
#                            (~5 s more to start)              [none]
#   SLURM_LOCAL_PORTS        "auto": pick free TCP ports at start, below
#                            the kernel's ephemeral range, and others if a
#                            daemon cannot bind (what the tests use: several
#                            clusters may run at once);
#                            "fixed": the four ports below     [fixed]
#   SLURM_LOCAL_CTLD_PORT    slurmctld port                    [16817]
#   SLURM_LOCAL_SLURMD_PORT  first slurmd port (one per node)  [16818]
#   SLURM_LOCAL_DBD_PORT     slurmdbd port                     [16816]
#   SLURM_LOCAL_DB_PORT      MariaDB port (127.0.0.1 only)     [13307]
#   SLURM_LOCAL_TIMEOUT      seconds to wait for daemons/nodes [60]
#   The fixed defaults sit 10000 above Slurm's own (6817/6818/6819) so that
#   a system Slurm on the same machine does not collide with this one.
#
# Open MPI: a TaskProlog gives each node's tasks their own shared-memory
# folder (OMPI_MCA_btl_vader_backing_directory), since all nodes, and any
# other such cluster, share this host (see the comment in the config).
#
# Choices that make it work in a VM or container without systemd/cgroups:
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
#   JobCompType=jobcomp/filetxt (for "sacct -c"), MinJobAge=3600 (finished
#   jobs stay visible to "squeue -t all" and "scontrol show job" for an hour),
#   KillWait=5 (quick scancel), all daemons as root, munge on a private socket.
set -euo pipefail

BASE=${SLURM_LOCAL_DIR:-/tmp/surge-slurm-local}
NODES=${SLURM_LOCAL_NODES:-1}
CPUS=${SLURM_LOCAL_CPUS:-8}
MPI_DEFAULT=${SLURM_LOCAL_MPI_DEFAULT:-none}
ACCOUNTING=${SLURM_LOCAL_ACCOUNTING:-none}
PORTS=${SLURM_LOCAL_PORTS:-fixed}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-16818}
DBD_PORT=${SLURM_LOCAL_DBD_PORT:-16816}
DB_PORT=${SLURM_LOCAL_DB_PORT:-13307}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

log() { echo "slurm-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $BASE == /?* && $BASE != *[[:space:]]* ]] ||
    die "SLURM_LOCAL_DIR must be an absolute path without blanks: '$BASE'"
BASE=${BASE%/}
[[ $NODES =~ ^[1-9][0-9]?$ ]] || die "SLURM_LOCAL_NODES must be 1..99, not '$NODES'"
[[ $CPUS =~ ^[1-9][0-9]{0,3}$ ]] || die "SLURM_LOCAL_CPUS must be 1..9999, not '$CPUS'"
[[ $ACCOUNTING == none || $ACCOUNTING == slurmdbd ]] ||
    die "SLURM_LOCAL_ACCOUNTING must be none or slurmdbd, not '$ACCOUNTING'"
[[ $MPI_DEFAULT =~ ^(none|pmix|pmi2)$ ]] ||
    die "SLURM_LOCAL_MPI_DEFAULT must be none, pmix or pmi2, not '$MPI_DEFAULT'"
[[ $PORTS == auto || $PORTS == fixed ]] ||
    die "SLURM_LOCAL_PORTS must be auto or fixed, not '$PORTS'"
[[ $TIMEOUT =~ ^[1-9][0-9]{0,3}$ ]] || die "SLURM_LOCAL_TIMEOUT must be 1..9999 seconds"
for p in CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT; do
    if ! [[ ${!p} =~ ^[1-9][0-9]{2,4}$ ]] || ((${!p} > 65535 - NODES)); then
        die "SLURM_LOCAL_$p must be a TCP port number, not '${!p}'"
    fi
done

CONF=$BASE/etc/slurm.conf
MUNGE_DIR=$BASE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
RUN_DIR=$BASE/run
LOG_DIR=$BASE/log
DB_DIR=$BASE/mysql
HOST=$(hostname -s 2>/dev/null || uname -n | cut -d. -f1)

NODE_NAMES=()
if ((NODES == 1)); then
    NODE_NAMES=("$HOST")
else
    for ((i = 1; i <= NODES; i++)); do NODE_NAMES+=("node$i"); done
fi

export SLURM_CONF=$CONF

# ---------------------------------------------------------------- helpers

# pid_alive PIDFILE BINARY: print the pid in PIDFILE if that process is
# alive and runs BINARY (guards against stale pid files and reused pids).
pid_alive() {
    local file=$1 bin=$2 pid exe
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' < "$file")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    # Debian installs slurmctld-wlm/slurmd-wlm behind alternatives links.
    case ${exe##*/} in
        "$bin" | "$bin"-wlm) echo "$pid" ;;
        *) return 1 ;;
    esac
}

# daemons ACCOUNTING NODE...: our daemons as "name pidfile binary" lines,
# in start order.
daemons() {
    local acct=$1 n; shift
    echo "munged $MUNGE_DIR/munged.pid munged"
    if [[ $acct == slurmdbd ]]; then
        echo "mariadbd $RUN_DIR/mariadbd.pid mariadbd"
        echo "slurmdbd $RUN_DIR/slurmdbd.pid slurmdbd"
    fi
    echo "slurmctld $RUN_DIR/slurmctld.pid slurmctld"
    for n in "$@"; do
        echo "slurmd($n) $RUN_DIR/slurmd-$n.pid slurmd"
    done
}

# The daemons of the cluster as it was last started, whatever the settings
# are now: those of the config we wrote, plus any of our pid files.
running_daemons() {
    local f n acct=none nodes=()
    if [[ -r $CONF ]]; then
        mapfile -t nodes < <(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF")
        grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF" &&
            acct=slurmdbd
    fi
    [[ -e $RUN_DIR/slurmdbd.pid || -e $RUN_DIR/mariadbd.pid ]] && acct=slurmdbd
    for f in "$RUN_DIR"/slurmd-*.pid; do
        [[ -e $f ]] || continue
        n=${f##*/slurmd-}; n=${n%.pid}
        [[ " ${nodes[*]} " == *" $n "* ]] || nodes+=("$n")
    done
    daemons "$acct" "${nodes[@]}"
}

all_running() {
    local name file bin
    while read -r name file bin; do
        pid_alive "$file" "$bin" >/dev/null || return 1
    done < <(daemons "$ACCOUNTING" "${NODE_NAMES[@]}")
}

# wait_for SECONDS COMMAND...: retry COMMAND every 0.5 s until it succeeds.
# COMMAND may be a function: each client command inside runs under its own
# timeout, so that one hanging on a half-up daemon cannot hang the script.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

show_log_tail() {
    [[ -r $1 ]] || return 0
    log "--- last lines of $1:"
    tail -n 20 "$1" >&2
}

print_env() {
    echo "export SLURM_CONF=$CONF"
}

# Serialise start/stop of one cluster (e.g. several test processes). The
# daemons are started with fd 9 closed, so that they do not keep the lock.
take_lock() {
    mkdir -p "$BASE"
    exec 9>"$BASE/lock"
    flock -w 300 9 || die "$BASE/lock is held by another slurm-local.sh"
}

# Local TCP ports in use in any state (listening, connected, TIME_WAIT),
# from /proc: no ss or netstat needed, and no gawk (Debian's awk is mawk,
# without strtonum).
used_ports() {
    local f local_addr rest
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $f ]] || continue
        while read -r _ local_addr rest; do
            [[ $local_addr != *:* ]] || echo $((16#${local_addr##*:}))
        done < "$f"
    done | sort -un
}

port_free() { ! grep -qx "$1" <<<"$USED"; }

random_u32() { od -An -N4 -tu4 /dev/urandom | tr -d ' '; }

# pick_ports [new]: with SLURM_LOCAL_PORTS=auto, reuse the ports of the
# running cluster (so that "start" stays a no-op; not with "new") or choose
# free ones at random below the kernel's ephemeral range (outgoing
# connections take ports from that range, and one of them holding our
# port makes the daemon's bind fail): slurmctld, then NODES consecutive
# slurmd ports, then dbd and db. Another program may still take a port
# between the choice and the bind: cmd_start then tries other ports.
pick_ports() {
    [[ $PORTS == auto ]] || return 0
    if [[ ${1:-} != new && -r $CONF ]] && all_running; then
        CTLD_PORT=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
        SLURMD_PORT=$(sed -n 's/^NodeName=.* Port=\([0-9]*\).*/\1/p' "$CONF" | head -1)
        DBD_PORT=$(sed -n 's/^AccountingStoragePort=//p' "$CONF")
        DBD_PORT=${DBD_PORT:-0}
        DB_PORT=$(sed -n 's/^# db port //p' "$CONF")
        DB_PORT=${DB_PORT:-0}
        [[ -n $CTLD_PORT && -n $SLURMD_PORT ]] && return 0
    fi
    local lo=10000 hi=32767 eph try base i ok span=$((NODES + 3))
    eph=$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || eph=""
    if [[ $eph =~ ^([0-9]+)[[:space:]]+([0-9]+)$ ]] &&
       ((BASH_REMATCH[1] - 1 - lo >= 1000)); then
        hi=$((BASH_REMATCH[1] - 1))
    fi
    USED=$(used_ports)
    for ((try = 0; try < 200; try++)); do
        base=$((lo + $(random_u32) % (hi - lo - span)))
        ok=1
        for ((i = 0; i < span; i++)); do
            port_free $((base + i)) || { ok=0; break; }
        done
        ((ok)) || continue
        CTLD_PORT=$base
        SLURMD_PORT=$((base + 1))
        DBD_PORT=$((base + NODES + 1))
        DB_PORT=$((base + NODES + 2))
        return 0
    done
    die "found no free range of $span TCP ports in $lo..$hi"
}

# ---------------------------------------------------------------- install

packages() {
    local pkgs=(munge slurmctld slurmd slurm-client)
    [[ $ACCOUNTING == slurmdbd ]] && pkgs+=(slurmdbd mariadb-server)
    echo "${pkgs[@]}"
}

packages_present() {
    local cmd cmds=(munged mungekey munge unmunge slurmctld slurmd sbatch srun
                    squeue scancel scontrol sinfo sacct)
    [[ $ACCOUNTING == slurmdbd ]] &&
        cmds+=(slurmdbd sacctmgr mariadbd mariadb-install-db mariadb-admin)
    for cmd in "${cmds[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || return 1
    done
    compgen -G '/usr/lib/*/slurm-wlm/proctrack_linuxproc.so' >/dev/null
}

cmd_install() {
    packages_present && { log "packages present: $(packages)"; return 0; }
    ((EUID == 0)) || die "installing packages needs root"
    log "installing $(packages) with apt-get"
    # A policy-rc.d, if present, keeps the packages' init scripts from
    # starting the system daemons; those would use /etc and Slurm's default
    # ports, not ours, so they would not interfere anyway.
    local pkgs
    read -r -a pkgs <<<"$(packages)"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q
               --no-install-recommends "${pkgs[@]}")
    if ! timeout 900 "${apt[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        timeout 600 apt-get update -q >&2
        timeout 900 "${apt[@]}" >&2
    fi
}

# ---------------------------------------------------------------- config

accounting_config() {
    if [[ $ACCOUNTING == slurmdbd ]]; then
        cat <<EOF
# Accounting through our slurmdbd (plain sacct works). Messages to
# slurmdbd are authenticated with AccountingStoragePass, not AuthInfo.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=socket=$MUNGE_SOCKET
# db port $DB_PORT
EOF
    else
        cat <<EOF
# No slurmdbd: no accounting database, plain sacct fails.
AccountingStorageType=accounting_storage/none
EOF
    fi
}

render_dbd_config() {
    cat <<EOF
# Generated by slurm-local.sh: slurmdbd on 127.0.0.1, MariaDB under $DB_DIR.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
}

# The TaskProlog: slurmstepd runs it before each task and adds the
# "export NAME=value" lines it prints to the task's environment.
render_task_prolog() {
    cat <<EOF
#!/bin/sh
# Generated by slurm-local.sh: a shared-memory folder per node (see
# TaskProlog in slurm.conf).
dir=$BASE/tmp/\$SLURMD_NODENAME/shm
mkdir -p "\$dir" 2>/dev/null
echo "export OMPI_MCA_btl_vader_backing_directory=\$dir"
EOF
}

render_config() {
    local mem i n
    mem=$(awk -v n="$NODES" '/^MemTotal:/ {print int($2 / 1024 / n)}' /proc/meminfo)
    cat <<EOF
# Generated by slurm-local.sh: $NODES node(s) on this host, files under $BASE.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root

# Authentication through our own munged (private socket and key).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET

# %n is the node name: each slurmd has its own spool, tmp, pid and log.
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
TmpFS=$BASE/tmp/%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$BASE/etc/plugstack.conf

# Open MPI's shared-memory transport names its segments after the host
# name, the job and the local rank. Nodes of this cluster share one host
# (so do two such clusters, whose job ids both start at 1): ranks of one
# job on two "nodes", or jobs of two clusters, would open each other's
# segments and crash. Each node's tasks get a folder of their own.
TaskProlog=$BASE/etc/task-prolog.sh
MailProg=/bin/true

# No cgroups, no systemd: track processes through /proc, no CPU binding
# (binding could not work anyway with more CPUs announced than exist).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30

$(accounting_config)
# Finished jobs are also logged to a text file that "sacct -c" reads.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.txt

# Backfill every second: heterogeneous jobs are started only by backfill.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=$MPI_DEFAULT
ReturnToService=2
# Finished jobs stay visible to "squeue -t all" / "scontrol show job" 1 h.
MinJobAge=3600
# Quick scancel: SIGKILL 5 s after SIGTERM (default 30 s).
KillWait=5
InactiveLimit=0

# Each node announces $CPUS CPUs whatever the hardware has, so that several
# one-task jobs can run at once on a small machine; config_overrides makes
# slurmd accept the configured values instead of draining the node.
SlurmdParameters=config_overrides
EOF
    i=0
    for n in "${NODE_NAMES[@]}"; do
        echo "NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1" \
             "Port=$((SLURMD_PORT + i)) CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
        i=$((i + 1))
    done
    echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
}

# ---------------------------------------------------------------- start

start_munged() {
    # munged refuses a socket that not everybody can reach: each folder
    # above it must be searchable by all (mktemp -d makes mode 0700).
    local d=$MUNGE_DIR
    while [[ $d == /?* ]]; do
        d=${d%/*}
        [[ -z $d ]] && break
        [[ $(stat -c %A "$d") == ?????????[xt] ]] ||
            die "munged needs $d to be searchable by all (chmod o+x '$d')"
    done
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        mungekey -c -k "$MUNGE_DIR/munge.key" >&2 ||
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 2>/dev/null
        chmod 600 "$MUNGE_DIR/munge.key"
    fi
    # munged forks; its parent returns once the socket is ready.
    timeout "$TIMEOUT" munged --socket="$MUNGE_SOCKET" \
           --key-file="$MUNGE_DIR/munge.key" \
           --pid-file="$MUNGE_DIR/munged.pid" \
           --log-file="$LOG_DIR/munged.log" \
           --seed-file="$MUNGE_DIR/munged.seed" \
           </dev/null >>"$LOG_DIR/munged.out" 2>&1 9>&- ||
        { show_log_tail "$LOG_DIR/munged.log"; die "munged failed to start"; }
    timeout 10 munge -n -S "$MUNGE_SOCKET" |
        timeout 10 unmunge -S "$MUNGE_SOCKET" >/dev/null ||
        die "munge round trip failed"
}

db_ping() {
    timeout 10 mariadb-admin --no-defaults --socket="$DB_DIR/mysqld.sock" -uroot ping
}

# A fresh MariaDB, private to $DB_DIR, listening on 127.0.0.1 only.
start_mariadb() {
    timeout 120 mariadb-install-db --no-defaults --datadir="$DB_DIR/data" \
        --user=root --auth-root-authentication-method=normal --skip-test-db \
        >>"$LOG_DIR/mariadb-install.log" 2>&1 ||
        { show_log_tail "$LOG_DIR/mariadb-install.log"; die "mariadb-install-db failed"; }
    # mariadbd does not fork: setsid detaches it from our session. The
    # InnoDB settings are those slurmdbd checks (it logs an error if they
    # are less than half its recommendation).
    setsid mariadbd --no-defaults --user=root --datadir="$DB_DIR/data" \
        --socket="$DB_DIR/mysqld.sock" --pid-file="$RUN_DIR/mariadbd.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --skip-log-bin --log-error="$LOG_DIR/mariadbd.log" \
        --innodb-buffer-pool-size=512M --innodb-log-file-size=64M \
        --innodb-lock-wait-timeout=900 \
        </dev/null >>"$LOG_DIR/mariadbd.out" 2>&1 9>&- &
    wait_for "$TIMEOUT" db_ping ||
        { show_log_tail "$LOG_DIR/mariadbd.log"; die "MariaDB does not answer"; }
}

start_slurmdbd() {
    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF; it must be 0600.
    (umask 077; render_dbd_config > "$BASE/etc/slurmdbd.conf")
    timeout "$TIMEOUT" slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.out" 2>&1 9>&- ||
        { show_log_tail "$LOG_DIR/slurmdbd.log"; die "slurmdbd failed to start"; }
    # slurmctld registers the cluster itself when it first connects.
    wait_for "$TIMEOUT" timeout 10 sacctmgr -n list cluster ||
        { show_log_tail "$LOG_DIR/slurmdbd.log"; die "slurmdbd does not answer"; }
}

# Fail clearly if another process (an older cluster whose files were
# deleted, a system slurmctld) listens on one of our ports.
check_ports() {
    local p i ports=("$CTLD_PORT")
    USED=$(used_ports)
    for ((i = 0; i < NODES; i++)); do ports+=($((SLURMD_PORT + i))); done
    [[ $ACCOUNTING == slurmdbd ]] && ports+=("$DBD_PORT" "$DB_PORT")
    for p in "${ports[@]}"; do
        port_free "$p" ||
            die "TCP port $p is in use (set SLURM_LOCAL_PORTS=auto or other SLURM_LOCAL_*_PORT)"
    done
}

nodes_idle() {
    local states
    states=$(timeout 10 sinfo -h -N -o %t 2>/dev/null) || return 1
    [[ $(wc -l <<<"$states") -eq $NODES ]] || return 1
    ! grep -qvE '^(idle|mix|alloc)$' <<<"$states"
}

# wait_ctld: wait until slurmctld answers; give up at once when it logged
# a fatal error (it exits then), else after $TIMEOUT seconds.
wait_ctld() {
    local deadline=$((SECONDS + TIMEOUT))
    until timeout 10 scontrol ping >/dev/null 2>&1; do
        grep -q 'fatal:' "$LOG_DIR/slurmctld.log" 2>/dev/null && return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# start_daemons: start munged, (MariaDB, slurmdbd,) slurmctld and the
# slurmd daemons from a fresh state and wait until every node is idle.
# Returns 2 when a daemon could not bind its port (another process took
# it: worth another try on other ports), dies on any other failure.
start_daemons() {
    local n
    # Fresh state: no jobs from an earlier run (job ids restart at 1, so
    # the job completion log is emptied too). Daemon logs are appended to.
    rm -rf "${BASE:?}"/{state,spool,tmp,run,etc,mysql}
    rm -f "$LOG_DIR/jobcomp.txt"
    mkdir -p "$BASE/state" "$RUN_DIR" "$LOG_DIR" "$MUNGE_DIR" "$BASE/etc" ||
        die "cannot create folders under $BASE"
    for n in "${NODE_NAMES[@]}"; do
        mkdir -p "$BASE/spool/$n" "$BASE/tmp/$n" || die "cannot create $BASE/spool/$n"
    done
    # munged wants its socket directory traversable by everyone.
    chmod 755 "$BASE" "$MUNGE_DIR" || die "cannot chmod $BASE"
    { render_config > "$CONF" && : > "$BASE/etc/plugstack.conf" &&
      render_task_prolog > "$BASE/etc/task-prolog.sh" &&
      chmod 755 "$BASE/etc/task-prolog.sh"; } ||
        die "cannot write $CONF"
    # Only this attempt's lines decide whether a bind failed.
    : > "$LOG_DIR/slurmctld.log"
    for n in "${NODE_NAMES[@]}"; do : > "$LOG_DIR/slurmd-$n.log"; done

    log "starting munged"
    start_munged

    if [[ $ACCOUNTING == slurmdbd ]]; then
        log "starting MariaDB (port $DB_PORT) and slurmdbd (port $DBD_PORT)"
        mkdir -p "$DB_DIR"
        start_mariadb
        start_slurmdbd
    fi

    log "starting slurmctld (port $CTLD_PORT)"
    # -c: start without recovering state (there is none to recover).
    if ! timeout "$TIMEOUT" slurmctld -c -f "$CONF" \
            </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1 9>&- ||
       ! wait_ctld; then
        show_log_tail "$LOG_DIR/slurmctld.log"
        grep -q 'Address already in use' "$LOG_DIR/slurmctld.log" && return 2
        die "slurmctld failed to start"
    fi

    for n in "${NODE_NAMES[@]}"; do
        log "starting slurmd for node $n ($CPUS CPUs)"
        timeout "$TIMEOUT" slurmd -f "$CONF" -N "$n" \
            </dev/null >>"$LOG_DIR/slurmd-$n.out" 2>&1 9>&- ||
            { show_log_tail "$LOG_DIR/slurmd-$n.log"; die "slurmd ($n) failed to start"; }
    done
    if ! wait_for "$TIMEOUT" nodes_idle; then
        timeout 10 sinfo -N -l >&2 || true
        for n in "${NODE_NAMES[@]}"; do
            show_log_tail "$LOG_DIR/slurmd-$n.log"
            grep -q 'Address already in use' "$LOG_DIR/slurmd-$n.log" && return 2
        done
        show_log_tail "$LOG_DIR/slurmctld.log"
        die "nodes not idle after ${TIMEOUT}s"
    fi
}

cmd_start() {
    local new t0 try rc
    packages_present ||
        die "Slurm packages missing: run '$0 install' as root (apt-get install $(packages))"
    pick_ports
    # Fails early (before stopping anything) if the settings are wrong.
    new=$(render_config)
    if all_running && [[ -r $CONF ]] && [[ $(cat "$CONF") == "$new" ]] &&
       nodes_idle; then
        log "already running: $(timeout 10 sinfo -h -o '%D node(s) %t')"
        print_env
        return 0
    fi
    t0=$SECONDS
    for ((try = 1; ; try++)); do
        # Partly up, stale or configured differently: stop ours, start
        # afresh.
        cmd_stop quiet
        check_ports
        rc=0
        start_daemons || rc=$?
        ((rc == 0)) && break
        if [[ $PORTS != auto ]] || ((try >= 3)); then
            cmd_stop quiet
            die "a daemon could not bind its port (set SLURM_LOCAL_PORTS=auto or other ports)"
        fi
        log "a port was taken meanwhile; trying other ports"
        pick_ports new
    done
    log "up in $((SECONDS - t0))s: $(timeout 10 sinfo -h -o '%D node(s) %N %t, %c CPUs each')"
    print_env
}

# ---------------------------------------------------------------- stop

# stop_daemons "NAME PIDFILE BINARY"...: SIGTERM each of these daemons that
# is alive, wait for all to exit, SIGKILL any still there after 20 s.
stop_daemons() {
    local line name file bin pid i
    local -A pids=()
    for line in "$@"; do
        read -r name file bin <<<"$line"
        pid=$(pid_alive "$file" "$bin") || continue
        kill -TERM "$pid" 2>/dev/null && pids[$pid]=$name
    done
    for ((i = 0; i < 200 && ${#pids[@]} > 0; i++)); do
        for pid in "${!pids[@]}"; do
            [[ -d /proc/$pid ]] || unset "pids[$pid]"
        done
        ((${#pids[@]} == 0)) || sleep 0.1
    done
    for pid in "${!pids[@]}"; do
        log "${pids[$pid]} (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    done
}

queue_empty() {
    local q
    q=$(timeout 10 squeue -h -o %A 2>/dev/null) && [[ -z $q ]]
}
# A job step that is still ending keeps its socket in the spool directory.
no_steps() { ! compgen -G "$BASE/spool/*/*_[0-9]*" >/dev/null; }

cmd_stop() {
    local quiet=${1:-} jobs
    # Cancel the jobs first, so that their slurmstepd processes (which are
    # not ours to kill by name) end by themselves before slurmd goes.
    if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null; then
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ') || true
        if [[ -n ${jobs// /} ]]; then
            # shellcheck disable=SC2086  # one job id per word
            timeout 10 scancel $jobs 2>/dev/null || true
            wait_for 20 queue_empty ||
                log "jobs still listed: $(timeout 10 squeue -h -o %A | tr '\n' ' ')"
        fi
        wait_for 15 no_steps || log "job steps still ending"
    fi
    # Each daemon takes ~2 s to exit: stop slurmctld and the slurmd
    # together, then together the services they use (slurmdbd, MariaDB,
    # munged); the next start begins from a clean state in any case.
    local line first=() rest=()
    while read -r line; do
        case $line in
            slurmctld* | slurmd\(*) first+=("$line") ;;
            *) rest+=("$line") ;;
        esac
    done < <(running_daemons)
    stop_daemons "${first[@]}"
    stop_daemons "${rest[@]}"
    rm -f "$RUN_DIR"/*.pid "$MUNGE_DIR/munged.pid"
    [[ $quiet == quiet ]] || log "stopped"
}

# ---------------------------------------------------------------- status

cmd_status() {
    local name file bin pid rc=0
    while read -r name file bin; do
        if pid=$(pid_alive "$file" "$bin"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"; rc=1
        fi
    done < <(running_daemons)
    if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null; then
        echo "SLURM_CONF=$CONF"
        timeout 10 sinfo -N -l || rc=1
        timeout 10 squeue || rc=1
    fi
    return "$rc"
}

case ${1:-} in
    install) cmd_install ;;
    start)   take_lock; cmd_start ;;
    stop)    take_lock; cmd_stop ;;
    status)  cmd_status ;;
    env)     print_env ;;
    *)       echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
