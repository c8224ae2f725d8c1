"""File stores (SPEC §7): file records in the database over content-addressed blobs.

``LocalFileStore(root, engine)`` is the default (a directory, ``FILES_DIR``); the
:class:`~storage.files.blobs.BlobStore` protocol is the seam for an S3-compatible store.
"""

from storage.files.blobs import BlobStore, LocalBlobs
from storage.files.store import BlobFileStore, LocalFileStore, new_file_id

__all__ = ["BlobFileStore", "BlobStore", "LocalBlobs", "LocalFileStore", "new_file_id"]
