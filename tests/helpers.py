"""Set-ups test files share: a client of the emulator, its settings, the CLI as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from braze_cohorts import CohortClient
from braze_cohorts.testing import BrazeEmulator


def emulator_client(emulator: BrazeEmulator, **options: Any) -> CohortClient:
    """A client of ``emulator`` with its default partner and keys.

    ``options`` override those (``endpoint`` too) or add other settings of the client.
    """
    settings: dict[str, Any] = {
        "partner": emulator.partner,
        "partner_api_key": emulator.partner_api_key,
        "data_import_key": emulator.data_import_key,
        **options,
    }
    return CohortClient(settings.pop("endpoint", emulator.url), **settings)


def braze_environ(emulator: BrazeEmulator) -> dict[str, str]:
    """The environment variables that point the CLI at ``emulator`` with its default keys."""
    return {
        "BRAZE_REST_ENDPOINT": emulator.url,
        "BRAZE_PARTNER": emulator.partner,
        "BRAZE_PARTNER_API_KEY": emulator.partner_api_key,
        "BRAZE_DATA_IMPORT_KEY": emulator.data_import_key,
    }


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m braze_cohorts.cli ARGS`` as a real process (this environment by default)."""
    return subprocess.run(
        [sys.executable, "-m", "braze_cohorts.cli", *args],
        env=os.environ.copy() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
