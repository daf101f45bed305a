"""What every harness-based oracle does before it imports Synapse's test harness.

Imported first by `idgen_oracle.py` and `system_oracle.py` (both run from this folder).
"""

from __future__ import annotations

import os
import sys


def configure_environment() -> None:
    """Point Synapse's test harness at our PostgreSQL (target/synapse-env.sh's variables)
    and put Synapse's `tests` package on the path, before the harness is imported: it reads
    `SYNAPSE_POSTGRES*` at import time."""
    env = os.environ
    env["SYNAPSE_POSTGRES"] = "1"
    env.setdefault("SYNAPSE_POSTGRES_HOST", env.get("STREAMSIM_PG_HOST", "127.0.0.1"))
    env.setdefault("SYNAPSE_POSTGRES_PORT", env.get("STREAMSIM_PG_PORT", "54329"))
    env.setdefault("SYNAPSE_POSTGRES_USER", env.get("STREAMSIM_PG_USER", "postgres"))
    tests_dir = env.get("STREAMSIM_SYNAPSE_TESTS_DIR")
    if tests_dir and tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
