"""The one storage package: Parquet, JSON Lines and JSON on local paths and ``s3://`` URIs.

Publishing (the one rule, for local paths and ``s3://`` alike; no rename needed)
------------------------------------------------------------------------------
Every stage output is a folder holding a pointer and immutable versions::

    <output>/_SUCCESS              the marker: commit id, version, kind, sha256 + size of
                                   every file, the stage's sibling outputs, previous version
    <output>/v-<commit>/...        one published version (a single file, or a folder tree)

A stage publishes through one ``Publication`` (``with storage.publish(stage) as pub``):

1. **stage** - every output is written under a fresh ``<output>/v-<commit>/`` prefix, which
   no reader ever looks at (readers go through ``_SUCCESS``);
2. **verify** - each staged version is listed and read back: sha256 and size of every file
   (files staged in a local folder and uploaded must read back with their local digest);
3. **switch** - only when *all* outputs are staged and verified, each output's ``_SUCCESS``
   is replaced in one atomic step (rename locally, one PUT on S3), in the order the outputs
   were staged. Each marker names the commit, the sibling outputs and the version it
   replaces (``previous``);
4. **collect** - after the last switch, the replaced versions are deleted.

Until its ``_SUCCESS`` is replaced the previous version stays complete and readable; a
failure or kill before step 3 changes nothing a reader sees.

Several outputs commit together (the exact rule): a reader opening one output also reads
the markers of its siblings (those that still exist at the recorded URI and still name
this output as a sibling; an orchestrator that moved the artifacts elsewhere, as KFP's
launcher and the local runner's S3 upload do, already published them all or none). The output's *committed* version is its current one if every sibling's current
commit is the same; otherwise (a kill between two switches) it is the newest commit that
every output holds as current or ``previous``, which is the stage's last complete commit
(its files are kept until every switch is done). If no such commit exists the read fails.
So a reader sees either the old or the new set of a stage's outputs, never a mix.

Consumers refuse anything without its marker: ``open_output``, ``read_table``,
``read_jsonl``, ``iter_dataset_batches`` and ``list_partitions`` raise ``StorageError``
(one line naming the path; the stage CLIs exit 2) for a folder without a valid
``_SUCCESS``, a plain file outside a published version (unless ``require_marker=False``,
for files that are not stage outputs, e.g. a bundle's own members), a missing, truncated or
unlisted file, or an incomplete multi-output commit. ``read_bytes``/``read_json`` read single
objects (run records, cache entries) and resolve a published output when given one.

Leftover staging is cleaned on the next publish of the same output (only that output's
own prefix and its legacy ``.<name>.*`` siblings). Ownership rule: a version that no
marker references is deleted when its commit id names this host and a process id that is
no longer running (or this very process: it stages an output once per publication), or
when it is older than ``STAGING_GRACE_S`` (a writer on another host); another live
writer's fresh staging is never touched. Legacy staging names of the
pre-versioned code (``.<name>.<uuid32>.tmp|.old``, ``.<name>.tmp-|old-<uuid32>``,
``.<name>.<mkstemp>.tmp``) are deleted outright: current code never creates them, and a
folder holding a pre-versioned output (files beside no or a foreign marker) is cleared of
it after the first switch (an output folder belongs to its stage, as it always did).

Reads validate against a declared schema (``schemas.validate_table``) and name the file and
column on error. S3 endpoint, region, credentials and the time budget of every S3 call
(``SERVICE_TIMEOUT_S``: timeouts and retries, ``fs.s3_budget``) come from
``settings.S3Settings``.

Modules (callers import from the package, not from these): ``fs`` (locations, the one
digest helper ``file_digest``/``sha256_*``, the one atomic single-object write
``atomic_file``), ``marker`` (the one ``_SUCCESS`` format, commit ids, staging cleanup),
``outputs`` (``open_output``: resolve and check), ``objects`` (bytes/JSON), ``tables``
(Parquet/JSON Lines), ``publication`` (``publish``: the one publishing primitive).
"""

from __future__ import annotations

from components.contracts.storage.fs import (
    FAULT_ENV,
    StorageError,
    atomic_file,
    digest_path,
    exists,
    file_digest,
    filesystem,
    folder_digest,
    is_s3,
    join,
    normalize,
    s3_budget,
    sha256_bytes,
    sha256_file,
)
from components.contracts.storage.marker import (
    MARKER_FORMAT,
    MARKER_VERSION,
    STAGING_GRACE_S,
    SUCCESS_MARKER,
    VERSION_PREFIX,
    clean_staging,
    new_commit_id,
)
from components.contracts.storage.objects import (
    download_dir,
    read_bytes,
    read_json,
    upload_dir,
    write_bytes,
    write_json,
)
from components.contracts.storage.outputs import (
    Output,
    is_complete_dataset,
    list_partitions,
    open_output,
)
from components.contracts.storage.publication import (
    DatasetWriter,
    Publication,
    publish,
    publish_dir,
    publish_file,
    publish_json,
    publish_table,
    staged_dir,
    write_dataset,
)
from components.contracts.storage.tables import (
    ParquetStreamWriter,
    iter_dataset_batches,
    read_jsonl,
    read_table,
    write_jsonl,
    write_table,
)

__all__ = [
    "FAULT_ENV",
    "MARKER_FORMAT",
    "MARKER_VERSION",
    "STAGING_GRACE_S",
    "SUCCESS_MARKER",
    "VERSION_PREFIX",
    "DatasetWriter",
    "Output",
    "ParquetStreamWriter",
    "Publication",
    "StorageError",
    "atomic_file",
    "clean_staging",
    "digest_path",
    "download_dir",
    "exists",
    "file_digest",
    "filesystem",
    "folder_digest",
    "is_complete_dataset",
    "is_s3",
    "iter_dataset_batches",
    "join",
    "list_partitions",
    "new_commit_id",
    "normalize",
    "open_output",
    "publish",
    "publish_dir",
    "publish_file",
    "publish_json",
    "publish_table",
    "read_bytes",
    "read_json",
    "read_jsonl",
    "read_table",
    "s3_budget",
    "sha256_bytes",
    "sha256_file",
    "staged_dir",
    "upload_dir",
    "write_bytes",
    "write_dataset",
    "write_json",
    "write_jsonl",
    "write_table",
]
