# shellcheck shell=bash
# Shared helpers for devenv/docker/{up,down}. Sourced, never executed.
# Approach: /work/shared/docs/docker-exec.md §2 (private dockerd) and §3a (hostusr image).
set -euo pipefail

D="${WSA_DOCKER_DIR:-/var/lib/wsa-docker}"
SOCK="$D/docker.sock"
export DOCKER_HOST="unix://$SOCK"
PIDFILE="$D/dockerd.pid"
LOGFILE="$D/dockerd.log"
IMAGE=slurmtest/hostusr:latest
CONTAINER="${WSA_SLURM_CONTAINER:-slurmctld}"
READY_TIMEOUT="${WSA_DOCKER_READY_TIMEOUT:-60}"
# Debian's CLI matches the Debian dockerd; another CLI earlier in PATH may be newer.
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || echo docker)

log() { printf '[wsa-docker] %s\n' "$*" >&2; }
die() { printf '[wsa-docker] ERROR: %s\n' "$*" >&2; exit 1; }
require_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

dockerd_pid() {
    local pid
    [[ -r $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE") 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

container_running() {
    [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null) == true ]]
}

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}
