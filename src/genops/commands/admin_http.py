"""A command's call to a running ``genops serve``'s admin API (the admin token), and the one way its
failures read: the server's own error message, else the status line, else why it could not be reached."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson


class AdminCallError(Exception):
    """The admin API refused the call or could not be reached; the message says which, for a user."""


def admin_call(url: str, token: str, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
    """``method path`` on the server at ``url`` with ``body`` as JSON (None: no body); its JSON answer."""
    request = urllib.request.Request(url.rstrip("/") + path, method=method,
                                     data=orjson.dumps(body) if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except Exception:  # noqa: BLE001 - fall back to the status line
            message = f"HTTP {exc.code}"
        raise AdminCallError(message) from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminCallError(f"cannot reach the GenOps server at {url}: {getattr(exc, 'reason', exc)}") from None
