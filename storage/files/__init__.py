"""File stores (SPEC §7): file records in the database over content-addressed blobs.

One :class:`BlobFileStore` over either :class:`~storage.files.blobs.BlobStore`: ``LocalBlobs`` in a
directory (``FILES_DIR``, the default; ``LocalFileStore``) or ``S3Blobs`` in an S3-compatible
bucket (``FILES_URL=s3://bucket/prefix``, :mod:`storage.files.s3`). ``open_file_store`` picks one.
"""

from storage.files.backends import open_file_store
from storage.files.blobs import BlobStore, LocalBlobs
from storage.files.store import BlobFileStore, LocalFileStore, new_file_id

__all__ = ["BlobFileStore", "BlobStore", "LocalBlobs", "LocalFileStore", "new_file_id", "open_file_store"]
