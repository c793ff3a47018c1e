"""The SDK's models package is loaded lazily by the agent (waldur_slurm/waldur/sdk_models.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True, timeout=120
    )
    return json.loads(out.stdout)


def test_importing_the_client_loads_only_the_models_it_uses() -> None:
    result = _run(
        """
        import json, sys
        import waldur_slurm.waldur.client
        from waldur_api_client.models import OrderDetails, ResourceState
        from waldur_api_client.api.marketplace_orders import marketplace_orders_list
        models = [m for m in sys.modules if m.startswith("waldur_api_client.models.")]
        order = OrderDetails.from_dict({"uuid": "0" * 32, "state": "executing"})
        try:
            from waldur_api_client.models import NoSuchModel
            missing = "imported"
        except ImportError as exc:
            missing = str(exc)
        print(json.dumps({
            "models": len(models),
            "state": str(order.state),
            "enum": ResourceState.OK.value,
            "same": sys.modules["waldur_api_client.models"].OrderDetails is OrderDetails,
            "missing": missing,
            # VmHWM, not ru_maxrss: that one carries the (large) pytest parent's size over fork+exec
            "rss_mb": [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] / 1024,
        }))
        """
    )
    # The eager package imports ~3,000 model modules; the agent's endpoints need about a hundred.
    assert 10 < result["models"] < 300, result
    assert result["state"] == "executing"
    assert result["enum"] == "OK"
    assert result["same"] is True
    assert "NoSuchModel" in result["missing"]
    assert result["rss_mb"] < 80, result  # the eager package alone is ~100 MB


def test_an_eagerly_imported_package_is_left_alone() -> None:
    result = _run(
        """
        import json, sys
        import waldur_api_client.models as eager
        from waldur_slurm.waldur.sdk_models import install_lazy_models
        installed = install_lazy_models()
        print(json.dumps({
            "installed": installed,
            "same": sys.modules["waldur_api_client.models"] is eager,
            "models": len([m for m in sys.modules if m.startswith("waldur_api_client.models.")]),
        }))
        """
    )
    assert result == {"installed": False, "same": True, "models": result["models"]}
    assert result["models"] > 1000
