"""``compress deploy``: a finished run checked on the device it ships to (``local.py``), directly or over ssh
(``remote.py``). Engines are built there, parity and latency are measured there, the recipe's latency
gates are evaluated there, and ``device/<name>/`` plus a report section record it."""

from .local import DeployOptions, DeviceResult, deploy

__all__ = ["DeployOptions", "DeviceResult", "deploy"]
