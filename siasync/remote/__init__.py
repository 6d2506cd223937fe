"""Remote collections: other archives' images, staged like the archive's own.

A collection may be backed by a remote service, declared in ``siasync-remotes.toml``
beside the archive index (`siasync.remote.config`): any SIA 2.0 or SIAP 1.0 service by
URL, queried through pyvo (or through the astroquery module of that archive, where there
is one), or a HiPS survey cut by a hips2fits service through `astroquery.hips2fits`.

How a remote image becomes a job's product:

1. **Found** (`siasync.remote.catalog`, in the server): the fields of a job are grouped
   into small sky regions, and each region is one query of the remote (pyvo's SIA 2.0 or
   SIAP 1.0 client); the answer is kept on disk, so a job that resumes plans the same
   images. Each row becomes a `RemoteImage` (`siasync.remote.images`) with a stable id
   made from the remote's own identifier, and its footprint is matched against each
   field as the index matches the archive's images. A HiPS survey needs no query: its
   "images" are the tiles of a fixed HEALPix grid, each field paired with the tile that
   holds its centre.
2. **Fetched** (`siasync.remote.fetch`, in a worker): the whole image is downloaded once
   into a download cache on disk (`siasync.remote.cache`), shared by every job, worker
   process and server; each field is then cut from it locally, exactly as the archive's
   images are cut. Result ids stay ``FIELD.IMAGE.EXT``.
3. **Faults** (`siasync.remote.faults`): timeouts, 5xx answers, truncated or malformed
   answers are retried with exponential backoff; what still fails becomes a warning of the
   job, never its error.
"""
