"""The eager backend: runs kiln IR with the reference interpreter."""
