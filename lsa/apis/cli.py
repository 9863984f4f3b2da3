"""Turning the errors lsa's checks raise into one clear line and exit status 1 in the tools."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


def load_errors() -> tuple[type[BaseException], ...]:
    """The checkpoint errors whose message already says everything (no traceback needed)."""
    from lsa.apis.checkpoint_coverage import PartialCheckpointError
    from lsa.apis.checkpoint_loading import NotACheckpointError, UntrustedCheckpointError
    from lsa.converters.common import CheckpointMismatchError
    return (UntrustedCheckpointError, NotACheckpointError, PartialCheckpointError,
            CheckpointMismatchError)


@contextlib.contextmanager
def exit_on(*errors: type[BaseException]) -> Iterator[None]:
    """Re-raise ``errors`` as ``SystemExit('error: <message>')`` (printed without a traceback)."""
    try:
        yield
    except errors as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise SystemExit(f'error: {message}') from err
