"""The HTTP client of `call` steps and `http` sinks: aiohttp's (httpx would add about 6 MiB), with
a timeout per request and a bound on the answer read. aiohttp is imported by the first such step
or sink only: the engine serves HTTP without it (common/leanserver.py), and a namespace whose
flows make no HTTP calls does not carry its ~11 MiB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

MAX_RESPONSE_BYTES = 1024 * 1024
JSON = {"Content-Type": "application/json"}


class HttpFailure(Exception):
    """No answer: refused, reset, unreachable, or timed out (`timed_out`)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class HttpClient:
    def __init__(self, timeout_seconds: float) -> None:
        import aiohttp

        self._aiohttp: Any = aiohttp
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        """(status, body) of the answer; raises HttpFailure without one. An answer longer than
        MAX_RESPONSE_BYTES is cut there (a JSON parse of it then fails, as it should)."""
        aiohttp = self._aiohttp
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.request(
                method, url, data=body, headers=JSON if body is not None else None
            ) as response:
                return response.status, await response.content.read(MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise HttpFailure("timed out", timed_out=True) from None
        except (aiohttp.ClientError, OSError) as error:
            raise HttpFailure(f"{type(error).__name__}: {error}".rstrip(": ")) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
