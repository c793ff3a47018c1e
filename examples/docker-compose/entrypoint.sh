#!/bin/sh
# Entry point of the agent's image: runs waldur-slurm-agent with the given arguments.
#
# Why a wrapper: compose restart policies look only at "did it exit". `unless-stopped` would restart a daemon
# that exited 2 (configuration error, wrong offering) or 3 (Waldur refused the token) forever, and
# `on-failure` would too. Here a daemon (no arguments) that exits 2 or 3 says so once and then waits,
# stopped, until an operator fixes the configuration and recreates it; its healthcheck stays red. Any other
# exit (1, 4, a crash) is returned, so the restart policy restarts it. One-shot commands (--diag,
# --load-components, --once) always return their exit code.
waldur-slurm-agent "$@"
code=$?
if [ $# -eq 0 ] && { [ "$code" -eq 2 ] || [ "$code" -eq 3 ]; }; then
    echo "waldur-slurm-agent exited with $code ($( [ "$code" -eq 2 ] && echo 'configuration error' || echo 'Waldur refused the API token')): not restarting; fix it, then: docker compose up -d --force-recreate" >&2
    pid=""
    trap 'kill $pid 2>/dev/null; exit 0' TERM INT
    while :; do sleep 3600 >/dev/null 2>&1 & pid=$!; wait $pid; done
fi
exit "$code"
