"""User-facing errors: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config value, data file, run folder).

    The message must be one line that names the problem and the fix. The CLI
    prints it as ``error: <message>`` and exits with status 2.
    """

    exit_code = 2


class ConfigError(UserError):
    """An invalid configuration value, key or choice."""


class DataError(UserError):
    """A missing, corrupt or wrongly shaped data file."""


class Terminated(BaseException):
    """SIGTERM outside training (which handles it itself): unwinds like Ctrl-C, so files being
    written are removed, and ends the command with exit status 143 (raised by gan_cli.cli.main's
    signal handler)."""
