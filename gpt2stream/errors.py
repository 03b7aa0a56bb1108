"""The one exception type that entry points turn into a single-line message and a non-zero exit."""

from __future__ import annotations

import re

from tokenizer.errors import TokenizerError


class UserError(Exception):
    """Bad input the user can fix: a wrong flag value, a missing or corrupt file, an unknown dataset.

    The message is one line that says what is wrong and what to do. Entry points catch it, print
    ``error: <message>`` to stderr and exit with status 2, without a traceback.
    """


class DataStreamError(UserError):
    """The data stream failed for good (e.g. too many consecutive network failures).

    The trainer turns it into save-and-exit; the message says how to resume.
    """


# What an entry point prints as one ``error: ...`` line: ours, and the standalone tokenizer package's own type.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, TokenizerError)


_RESUME_ADVICE = re.compile(r",? *then resume the run with --resume(?: latest)?")


def without_resume_advice(message: str) -> str:
    """A failure's message for a run with no checkpoint yet: there is nothing to resume, so no such advice.

    >>> without_resume_advice("network: x failed 3 times; check HF_ENDPOINT, then resume the run with --resume latest")
    'network: x failed 3 times; check HF_ENDPOINT'
    """
    return _RESUME_ADVICE.sub("", message)
