"""The exceptions tgprep raises for problems a user can fix; the CLI prints them as one line."""


class UserError(Exception):
    """Bad input or a refused request: the message says which file, what is wrong and what to do.

    The command line prints it as a single line and exits with code 2; library callers catch it.
    """


class MissingVideosError(UserError):
    """Videos named by the official lists are not on disk (and --allow-missing was not given)."""
