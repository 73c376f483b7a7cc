"""The command-line options of every command that reads or writes remote places, defined once for both programs:
--storage-option (repeatable), and for readers --cache and --cache-limit. The command gets them as one
tgprep.storage.index.Storage, its `storage` argument."""

import functools

import click

from tgprep.storage.cache import size_from
from tgprep.storage.index import Storage


def _pairs(ctx, param, values) -> tuple:
    pairs = []
    for value in values:
        key, equals, setting = value.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE; e.g. --storage-option anon=true", ctx, param)
        pairs.append((key, setting))
    return tuple(pairs)


def _limit(ctx, param, value):
    if value is not None and not value.endswith("%"):
        size_from(value)  # a bad size is one line now, not after the index is read
    return value


OPTION = click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE", callback=_pairs,
                      help="For s3:// and gs://: a keyword argument of the fsspec file system (s3fs, gcsfs), e.g. "
                      "anon=true, endpoint_url=http://127.0.0.1:9000, client_kwargs.region_name=eu-west-1; repeat it. "
                      "Endpoints and credentials otherwise come from AWS_ENDPOINT_URL, AWS_PROFILE, "
                      "STORAGE_EMULATOR_HOST and the like.")
CACHE = click.option("--cache", "cache_folder", metavar="DIR",
                     help="Where remote shards are kept on this machine, shared by every rank and worker "
                     "[default: ~/.cache/tgprep/shards].")
CACHE_LIMIT = click.option("--cache-limit", callback=_limit, metavar="SIZE",
                           help="Most bytes the cache keeps, e.g. 200GB or 1.5TiB, or a share of the room on its disk "
                           "(free space plus what it holds), e.g. 30% [default: 50%]. The least recently used shards "
                           "go first; a shard being read never does.")


def storage_options(reads: bool = True):
    """Add the options to a command (the cache ones only for readers) and hand it `storage=Storage(...)`."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, storage_option=(), cache_folder=None, cache_limit=None, **kwargs):
            return command(*args, storage=Storage(storage_option, cache_folder, cache_limit), **kwargs)

        for option in reversed([OPTION, CACHE, CACHE_LIMIT] if reads else [OPTION]):
            wrapper = option(wrapper)
        return wrapper

    return decorate
