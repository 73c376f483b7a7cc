"""Where shards live: a local folder, s3://, gs:// or http(s)://, for every command of both programs.

  place    a location (folder or URL): read a small file, list, read bytes from an offset, put a finished file
  http     the standard library's HTTP client with Range, timeouts and one line per status
  fetch    a whole file into a local one: bounded tries with backoff, resumed by Range, checked size and sha256
  cache    the node's bounded cache of fetched shards, shared by every rank and worker, flock-safe
  index    a finished build's dataset.json as the index of its shards, and settings from the command line
  options  the command-line options of both programs for all of it, defined once

fsspec, s3fs and gcsfs (`pip install 'tgprep[remote]'`) are imported only when an s3:// or gs:// URL is used.
"""
