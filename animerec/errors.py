"""The one base class of errors that a user can fix (bad config, bad data, missing artifact).

Entry points print these as one clear paragraph, without a stack trace, and exit with status 2.
"""


class UserError(Exception):
    """An error caused by input or configuration; its message says what to fix."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the option."""


class RecommenderError(UserError, ValueError):
    """A query that cannot be answered as asked; the message says why and what to try."""
