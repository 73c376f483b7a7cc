"""The exceptions tgprep raises for problems a user can fix, and the click group that prints them as one line."""

import errno
import sys

import click


class UserError(Exception):
    """Bad input or a refused request: the message says which file, what is wrong and what to do.

    The command line prints it as a single line and exits with code 2; library callers catch it.
    """


class MissingVideosError(UserError):
    """Videos named by the official lists are not on disk (and --allow-missing was not given)."""


def disk_full(error: BaseException) -> bool:
    """Whether an error means the output's file system is full (or the user's quota spent)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


class OneLineErrors(click.Group):
    """A command group that turns UserError and click's usage errors into one line on stderr and exit code 2,
    never a traceback or a usage block."""

    interrupted = "interrupted: run the same command again to resume"

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except click.UsageError as e:  # a bad option: one line too, instead of click's usage block
            hint = "" if isinstance(e, click.BadParameter) else f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
            click.echo(f"error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo(self.interrupted, err=True)
            sys.exit(130)
