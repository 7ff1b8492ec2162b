"""Where a pool's index is found unless told otherwise; light to import, so the CLI checks its flags before
the Qdrant client is loaded."""

DEFAULT_QDRANT_PORT = 6333
DEFAULT_QDRANT_URL = f"http://127.0.0.1:{DEFAULT_QDRANT_PORT}"
DEFAULT_COLLECTION = "pool"
