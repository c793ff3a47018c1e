"""Operator tools: --diag, --load-components, logging/metrics/heartbeat (observability)."""
