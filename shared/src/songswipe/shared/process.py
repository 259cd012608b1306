"""Start-up every service process shares: settings first, then logging."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import uvloop
from pydantic import ValidationError

from songswipe.shared.logs import configure_logging
from songswipe.shared.settings import ServiceSettings
from songswipe.shared.validation import describe_invalid

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")

#: Exit code of a process whose settings were refused.
EXIT_BAD_SETTINGS = 2


def start_process(
    settings_class: type[S], *, service: str, quiet_loggers: Iterable[str] = ()
) -> S:
    """Read the settings and configure logging once, or exit saying what to fix.

    ``quiet_loggers`` are libraries that narrate at INFO; they log from
    WARNING up unless the process asks for more than INFO.
    """
    try:
        settings = settings_class()
    except ValidationError as exc:
        configure_logging()
        logger.error(
            "%s not started; fix its settings first: %s",
            service,
            describe_invalid(exc, whole="settings"),
        )
        sys.exit(EXIT_BAD_SETTINGS)

    configure_logging(
        settings.log_level, settings.log_format, secrets=settings.secret_values()
    )
    root_level = logging.getLogger().level
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(max(logging.WARNING, root_level))
    return settings


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop: a worker spends much of its CPU in the event loop,
    and uvloop's costs a fraction of asyncio's."""
    return uvloop.run(main)


def use_uvloop() -> None:
    """Make loops created from now on uvloop's, for frameworks (faust) that
    create their own."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
