"""bottlelens from Python: a typed client for a running bottlelens service.

>>> from bottlelens import Client
>>> with Client("http://127.0.0.1:8000", api_key="...") as api:  # doctest: +SKIP
...     api.list_analyses(status="succeeded").count
"""

from bottlelens.client import ApiError, Client

__all__ = ["ApiError", "Client"]
