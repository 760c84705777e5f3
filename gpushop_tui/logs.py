"""Logging for the faces: one rotating file under the log dir, redacted, private to the user."""

from __future__ import annotations

import logging
import logging.handlers
import os

from gpushop_tui.config import Settings
from gpushop_tui.core import RedactingFilter

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(settings: Settings) -> logging.Handler:
    """Send gpushop's logs to the log file (0600), every record passed through redaction."""
    log_file = settings.paths.log_file
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(log_file, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return handler
