"""What every job shares: flags, config, logging, the session, the `runs` record, exit codes.

A stage module (``meltrca.stages.*``) provides ``DESCRIPTION``, ``add_arguments(parser)``,
optionally ``config_overrides(args) -> dict``, ``lake_root(args) -> str | None`` and
``preflight(args, settings)`` (checks that need no Spark: missing local inputs, bad flag values;
they fail in a second and record no run), and ``execute(ctx)``. ``job_main`` turns it into
``main(argv) -> int`` for jobs/*.py and the CLI: 0 on success, non-zero with one line on stderr
on any failure (Airflow/cron judge by it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from meltrca.config import Settings, load_settings, secret_values
from meltrca.errors import ConfigError, MeltrcaError
from meltrca.logs import get_logger, progress, redact, setup_logging
from meltrca.stages.common import not_implemented
from meltrca.timewindow import TimeWindow, utcnow

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from meltrca.io import Lake

log = get_logger("job")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (plus exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def common_parser() -> argparse.ArgumentParser:
    """Flags every subcommand takes (SPEC §4)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="YAML", help="config overlay (conf/local.yaml, conf/cluster.yaml, ...)")
    g.add_argument("--master", help="Spark master (local[*], spark://host:7077, yarn, k8s://...)")
    g.add_argument("--start", metavar="TIME", help="input window start, ISO-8601 UTC (inclusive)")
    g.add_argument("--end", metavar="TIME", help="input window end, ISO-8601 UTC (exclusive)")
    g.add_argument("--batch-size", type=int, metavar="N", help="rows per Arrow batch / processing batch")
    g.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    g.add_argument("--verbose", action="store_true", help="show Spark's own INFO logs and progress bars")
    return p


def build_parser(job: str, stage: ModuleType) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"meltrca {job}",
        description=stage.DESCRIPTION,
        parents=[common_parser()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stage.add_arguments(parser)
    return parser


@dataclass
class JobContext:
    """One job run: parsed flags, settings, the (lazy) session and lake, counts and timings."""

    job: str
    args: argparse.Namespace
    settings: Settings
    run_id: str
    window: TimeWindow
    lake_root: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # shown in the run summary and kept in `runs`
    timings: dict[str, float] = field(default_factory=dict)
    systems: list[str] = field(default_factory=list)
    watermark: datetime | None = None  # --incremental: end of the newest succeeded run of this job
    _spark: SparkSession | None = None
    _lake: Lake | None = None
    _owns_spark: bool = False
    started_at: Any = field(default_factory=utcnow)

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            from pyspark.sql import SparkSession

            from meltrca.spark import build_session

            self._owns_spark = SparkSession.getActiveSession() is None
            self._spark = build_session(
                self.settings,
                master=self.args.master,
                app_name=f"meltrca-{self.job}",
                verbose=self.args.verbose,
            )
        return self._spark

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            from meltrca.io import Lake

            if not self.lake_root:
                raise ConfigError(f"meltrca {self.job} needs a lake folder (--lake/--output)")
            self._lake = Lake(self.spark, self.lake_root)
        return self._lake

    def count(self, name: str, n: int) -> None:
        self.counts[name] = int(n)

    def note(self, text: str) -> None:
        """Something a person should know of a run that still succeeds (printed, and kept in `runs`)."""
        self.notes.append(text)
        print(redact(f"[meltrca] note: {text}"), file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage and print its progress line; set info['rows'] inside the block."""
        info: dict[str, Any] = {"rows": None, "extra": ""}
        t0 = time.perf_counter()
        yield info
        secs = time.perf_counter() - t0
        self.timings[name] = round(secs, 3)
        if info["rows"] is not None:
            self.counts[name] = int(info["rows"])
        progress(name, info["rows"], secs, info["extra"])

    def record_run(self, status: str, error: str | None = None) -> None:
        """Upsert this run's row in `runs` (started, succeeded or failed)."""
        if not self.lake_root or self._spark is None:
            return
        from meltrca.runs import write_run

        write_run(self, status, error)


def _one_line(exc: BaseException) -> str:
    """A short, single-line reason for an unexpected exception (Py4J traces cut to their message)."""
    text = str(exc).strip()
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            text = f"{java.getClass().getName()}: {java.getMessage()}"
        except Exception:  # the JVM may already be gone
            pass
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


class Terminated(MeltrcaError):
    """SIGTERM (a scheduler stopping the task): the run is recorded failed, exit 143."""

    exit_code = 143


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("terminated (SIGTERM)")


def run_stage(job: str, stage: ModuleType, argv: Sequence[str] | None = None) -> int:
    """Parse, configure, execute and record one job; return its exit code.

    A run's `runs` row is written `running` before work starts and `succeeded`/`failed` at the end;
    SIGTERM (Airflow/cron stopping the task) becomes a recorded failure with exit code 143. A run
    killed outright (SIGKILL, OOM killer, lost driver) cannot record anything: its row stays
    `running`, which nothing reads as done (the --incremental watermark reads `succeeded` rows only).
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run_stage(job, stage, argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_stage(job: str, stage: ModuleType, argv: Sequence[str] | None = None) -> int:
    parser = build_parser(job, stage)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    ctx: JobContext | None = None
    try:
        overrides: dict[str, Any] = {"processing.batch_size": args.batch_size}
        if hasattr(stage, "config_overrides"):
            overrides.update(stage.config_overrides(args))
        settings = load_settings(args.config, overrides=overrides)
        setup_logging(settings.logging.level, secrets=secret_values(settings), debug=args.debug)
        log.debug("settings %s", settings.to_dict())
        if stage.execute is not_implemented:  # fail before starting Spark or recording a run
            stage.execute(None)
        if hasattr(stage, "preflight"):  # missing inputs / bad flag values: one line, no session, no run
            stage.preflight(args, settings)
        ctx = JobContext(
            job=job,
            args=args,
            settings=settings,
            run_id=f"{job}-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
            window=TimeWindow.from_flags(args.start, args.end),
            lake_root=stage.lake_root(args) if hasattr(stage, "lake_root") else None,
        )
        log.debug("run %s parameters %s", ctx.run_id, json.dumps(vars(args), default=str))
        if ctx.lake_root:
            ctx.spark  # noqa: B018 - start the session so the run is recorded before work begins
            ctx.record_run("running")
        t0 = time.perf_counter()
        stage.execute(ctx)
        ctx.timings["total"] = round(time.perf_counter() - t0, 3)
        ctx.record_run("succeeded")
        return 0
    except MeltrcaError as exc:
        _fail(ctx, job, str(exc), debug=getattr(args, "debug", False))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail(ctx, job, "interrupted", debug=False)
        return 130
    except Exception as exc:
        _fail(ctx, job, _one_line(exc), debug=getattr(args, "debug", False))
        return 1
    finally:
        if ctx is not None and ctx._owns_spark and ctx._spark is not None:
            ctx._spark.stop()


def _fail(ctx: JobContext | None, job: str, reason: str, *, debug: bool) -> None:
    if debug:
        print(redact(traceback.format_exc()), file=sys.stderr)
    if ctx is not None:
        try:
            ctx.record_run("failed", reason)
        except Exception as exc:
            log.warning("could not record the failed run: %s", _one_line(exc))
    print(redact(f"meltrca {job}: error: {reason}"), file=sys.stderr, flush=True)
