"""One shared aiohttp ClientSession per (event loop, key), created on first use.

aiohttp sessions are bound to the loop they were created on, so "one per process" means one per
loop; the trainer runs one long-lived loop, tests run many short ones.
"""
from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Dict

import aiohttp

_sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, aiohttp.ClientSession]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def shared_session(key: str = "default", limit: int = 256) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    with _lock:
        per_loop = _sessions.setdefault(loop, {})
        sess = per_loop.get(key)
        if sess is None or sess.closed:
            sess = per_loop[key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        return sess


async def close_shared_session(key: str = "default") -> None:
    """Close this loop's session for `key` (if any)."""
    loop = asyncio.get_running_loop()
    with _lock:
        sess = _sessions.get(loop, {}).pop(key, None)
    if sess is not None and not sess.closed:
        await sess.close()
