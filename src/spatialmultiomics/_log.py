"""The package logger. The library never configures handlers; the CLI does.

A progress bar and log lines share the terminal: a line written while the bar is drawn would land on the bar's
line (``spatialmultiomics:  14%|█▍ | 1/7 [...]alignment: joined ...``). :class:`TqdmHandler` writes each record
through ``tqdm.write``, which clears the bars, prints the line and redraws the bars beneath it; the CLI installs
it, and :func:`progress_bar` swaps it in for the console handlers a user configured while the bar is shown.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("spatialmultiomics")

__all__ = ["TqdmHandler", "log_warning", "logger", "progress_bar", "warnings_recorded"]


class TqdmHandler(logging.StreamHandler):
    """A stream handler that writes through ``tqdm.write``: open progress bars are redrawn beneath each line."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one formatted record above the progress bars of the same stream."""
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own convention: report through handleError, never raise
            self.handleError(record)


def warnings_recorded() -> bool:
    """True while Python warnings are being recorded (``warnings.catch_warnings(record=True)``, as pytest does).

    The CLI then leaves them alone instead of logging them, so that whoever records them still sees them.
    """
    import warnings

    impl = getattr(warnings, "_showwarnmsg_impl", None)
    return impl is not None and getattr(impl, "__name__", "") != "_showwarnmsg_impl"


def log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A ``warnings.showwarning`` that logs ``Category: message`` on one line through the package logger.

    The CLI installs it for the duration of a command, so that a warning is one line above the progress bar (and
    silent with ``--quiet``) instead of two lines of ``file:line`` and source code.
    """
    text = " ".join(str(message).split())
    logger.warning("%s: %s", category.__name__, text)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)


@contextmanager
def _redirect(loggers: Sequence[logging.Logger]) -> Iterator[None]:
    """Replace console stream handlers of ``loggers`` by :class:`TqdmHandler` (same stream, format, level, filters).

    Unlike ``tqdm.contrib.logging.logging_redirect_tqdm`` it adds no handler to a logger that has none (that would
    print records twice, once through the logger and once through the root logger it propagates to).
    """
    saved = [(lg, list(lg.handlers)) for lg in loggers]
    try:
        for lg in loggers:
            swapped = []
            for handler in lg.handlers:
                if _is_console(handler) and not isinstance(handler, TqdmHandler):
                    new = TqdmHandler(handler.stream)
                    new.setLevel(handler.level)
                    new.setFormatter(handler.formatter)
                    for flt in handler.filters:
                        new.addFilter(flt)
                    swapped.append(new)
                else:
                    swapped.append(handler)
            lg.handlers = swapped
        yield
    finally:
        for lg, handlers in saved:
            lg.handlers = handlers


@contextmanager
def progress_bar(total: int, *, desc: str, enabled: bool, unit: str = "stage") -> Iterator[Any]:
    """A tqdm bar over ``total`` steps (None when not ``enabled``); log lines meanwhile print above it.

    The console handlers of the package logger, of ``distributed`` (Dask) and of the root logger write through
    ``tqdm.write`` while the bar is open. The bar is removed when the block ends, so that the last line of a
    failed run is its error.
    """
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    loggers = [logger, logging.getLogger("distributed"), logging.getLogger()]
    with _redirect(loggers):
        bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
        try:
            yield bar
        finally:
            bar.close()
