"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class MeltrcaError(Exception):
    """A failure with a message meant for the person running the job."""

    exit_code = 1


class ConfigError(MeltrcaError):
    """A bad config file, key, value or flag. Exit code 2, like argparse usage errors."""

    exit_code = 2


class InputError(MeltrcaError):
    """Missing or unusable input (a path, a table, a required column)."""

    exit_code = 3


class SetupError(MeltrcaError):
    """The environment lacks something the setup step provides (jars, packages)."""

    exit_code = 4
