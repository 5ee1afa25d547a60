"""Credentials hidden: in URIs, in log records (Hydra's launch lines) and in Hydra's files."""

from __future__ import annotations

import logging
import re
from pathlib import Path


def redact(text: str) -> str:
    """Hide `user:password@` credentials inside URIs."""
    return re.sub(r"(://)[^/@\s:]+(:[^/@\s]*)?@", r"\1***@", str(text))


class RedactFilter(logging.Filter):
    """A logging filter hiding URI credentials in every record (Hydra's launch lines name the
    overrides, `tracking.uri` included); conf/config.yaml puts it on Hydra's and the jobs' handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        return True


def redact_files(paths) -> None:
    """Rewrite files (Hydra's `.hydra/*.yaml`, `multirun.yaml`) with URI credentials hidden."""
    for path in paths:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if redact(text) != text:
            Path(path).write_text(redact(text))
