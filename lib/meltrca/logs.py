"""Logging for jobs: one stderr handler, secrets redacted from every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

LOGGER_NAME = "meltrca"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Replaces secret strings in a record's final message with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
        return True


_redactor = RedactingFilter([])


def redact(text: str) -> str:
    """The text with every registered secret replaced by ***."""
    return _redactor.redact(text)


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = (), debug: bool = False) -> logging.Logger:
    """Configure the meltrca logger (idempotent). --debug forces DEBUG."""
    global _redactor
    _redactor = RedactingFilter(secrets)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_redactor)
    logger.addHandler(handler)
    logger.propagate = False
    # Python-side noise from py4j is never useful to an operator.
    logging.getLogger("py4j").setLevel(logging.DEBUG if debug else logging.ERROR)
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def progress(stage: str, rows: int | None, seconds: float, extra: str = "") -> None:
    """One progress line per stage on stderr: stage, rows, seconds (for people and for Airflow logs)."""
    rows_txt = f"{rows:,} rows" if rows is not None else "done"
    line = f"[meltrca] {stage:<10} {rows_txt:>16} {seconds:8.1f}s"
    if extra:
        line += f"  {extra}"
    print(redact(line), file=sys.stderr, flush=True)
