# Shared by devenv/mastermind/{up,down}: where the real Mastermind's scripts are and where it keeps its state.
# The server itself (source, locked requirements, database snapshot, install/up/down scripts) is
# ../shared/mastermind beside the repository; WSA_MASTERMIND_HOME overrides that.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
MM_HOME=${WSA_MASTERMIND_HOME:-$(readlink -f "$REPO/../shared/mastermind" 2>/dev/null || true)}
export MM_STATE=${MM_STATE:-/var/lib/wsa-mastermind}
log() { printf '[wsa-mastermind] %s\n' "$*" >&2; }
if [[ -z $MM_HOME || ! -f $MM_HOME/install ]]; then
    log "the Mastermind server scripts are not at ${MM_HOME:-../shared/mastermind}; set WSA_MASTERMIND_HOME"
    exit 1
fi
[[ $(id -u) == 0 ]] || { log "run as root"; exit 1; }
mm_port() {  # the port install recorded, unless the environment overrides it
    local p=${MM_PORT:-}
    [[ -n $p ]] || p=$(sed -n 's/^MM_PORT=//p' "$MM_STATE/mm.env" 2>/dev/null | tail -n 1)
    echo "${p:-8080}"
}
