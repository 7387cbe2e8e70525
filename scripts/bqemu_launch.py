"""Starts the bqemulator BigQuery emulator without its DuckDB spatial extension.

bqemulator 1.4.0 refuses to start when `INSTALL spatial` fails, which it always does offline. dealsync needs no
GEOGRAPHY functions, so the extension loader is replaced by a no-op before the normal CLI runs.
"""
import sys

import bqemulator.storage.engine as engine

engine.DuckDBEngine._load_spatial = lambda self: None

from bqemulator.cli import main  # noqa: E402

sys.exit(main())
