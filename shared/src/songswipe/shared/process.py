"""Start-up every service process shares: settings first, then logging."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TypeVar

from pydantic import ValidationError

from songswipe.shared.logs import configure_logging
from songswipe.shared.settings import ServiceSettings

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)

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
        logger.error("%s not started; fix its settings first: %s", service, exc)
        sys.exit(EXIT_BAD_SETTINGS)

    configure_logging(settings.log_level, settings.log_format)
    root_level = logging.getLogger().level
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(max(logging.WARNING, root_level))
    return settings
