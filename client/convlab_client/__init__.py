"""convlab's Python client and the ``convlab`` command: HTTP only, nothing of the server."""

from convlab_client.client import DEFAULT_URL, TERMINAL, ApiError, Client, Json, Status

__all__ = ["DEFAULT_URL", "TERMINAL", "ApiError", "Client", "Json", "Status"]
