"""Exit codes scripts can rely on, and the errors that carry them."""

from __future__ import annotations

from enum import IntEnum

import psycopg

from songswipe.shared.errors import DatabaseUnavailable, KafkaUnavailable

START_INFRA_HINT = "Start Kafka and PostgreSQL with `make up`."


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    DATABASE_UNAVAILABLE = 3
    KAFKA_UNAVAILABLE = 4
    NOT_FOUND = 5
    REFUSED = 6
    SERVICES_FAILED = 7
    TIMED_OUT = 8
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
Exit codes: 0 done; 1 unexpected failure; 2 bad usage;
3 database unreachable; 4 Kafka unreachable; 5 order or dead letter not found;
6 refused (already replayed, services already running); 7 a service failed to
start or is not running; 8 an order did not settle in time; 130 interrupted."""


class CliError(Exception):
    """A failure to report in one line, with what to do and an exit code."""

    def __init__(self, message: str, *, code: ExitCode, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def as_cli_error(exc: BaseException) -> CliError | None:
    """The ``CliError`` for an infrastructure failure, or ``None``."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, DatabaseUnavailable | psycopg.OperationalError):
        return CliError(
            "The database is unreachable: "
            + _first_line(exc).removeprefix("cannot reach the database: "),
            code=ExitCode.DATABASE_UNAVAILABLE,
            hint=START_INFRA_HINT + " Check DATABASE_URL.",
        )
    if isinstance(exc, KafkaUnavailable):
        return CliError(
            "Kafka is unreachable: "
            + _first_line(exc).removeprefix("cannot reach Kafka at "),
            code=ExitCode.KAFKA_UNAVAILABLE,
            hint=START_INFRA_HINT + " Check KAFKA_BOOTSTRAP_SERVERS.",
        )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
