"""The ElevenLabs music API: ``POST /v1/music`` returns the audio itself.

Responses are classified here, once, into ``ProviderError``s that say whether
a retry can help; nothing downstream looks at status codes again. The SDK
retries nothing on this path, and neither does this client: retrying is the
retry tiers' job.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import SecretStr

from songswipe.generator.prompt import build_prompt
from songswipe.generator.provider import CompositionRequest
from songswipe.shared.errors import ProviderError

logger = logging.getLogger(__name__)

MUSIC_PATH = "/v1/music"
CONNECTIONS_PER_CLIENT = 10
#: Longest wait a ``Retry-After`` header may ask for; more is a bad header.
MAX_RETRY_AFTER_MS = 60 * 60 * 1000
_ERROR_TEXT_MAX_CHARS = 300
_RETRIABLE_4XX = frozenset({408, 409, 425, 429})


class ElevenLabsProvider:
    """Long-lived HTTP clients, made once, for every generation of the process.

    With up to ``CONNECTIONS_PER_CLIENT`` generations at a time (the default
    concurrency, and the concurrency limit of most ElevenLabs plans) that is
    a single client. NOTE: httpcore's pool scans its connections
    quadratically on every request (encode/httpcore#1035): at a hundred
    connections that costs more CPU than the rest of a generation. Until it
    is fixed, higher concurrency is spread over a few clients of at most
    ``CONNECTIONS_PER_CLIENT`` connections each.
    """

    name = "elevenlabs"

    def __init__(
        self,
        *,
        api_key: SecretStr,
        base_url: str,
        model_id: str,
        output_format: str,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
    ) -> None:
        self._model_id = model_id
        self._output_format = output_format
        client_count = -(-max_connections // CONNECTIONS_PER_CLIENT)
        per_client = -(-max_connections // client_count)
        self._clients = [
            httpx.AsyncClient(
                base_url=base_url,
                headers={"xi-api-key": api_key.get_secret_value()},
                timeout=httpx.Timeout(
                    connect=connect_timeout_s,
                    read=read_timeout_s,
                    write=connect_timeout_s,
                    pool=connect_timeout_s,
                ),
                limits=httpx.Limits(
                    max_connections=per_client,
                    max_keepalive_connections=per_client,
                ),
            )
            for _ in range(client_count)
        ]
        self._requests_in_flight = [0] * client_count

    async def compose(self, request: CompositionRequest) -> bytes:
        body = {
            "prompt": build_prompt(request.brief, request.variant_number),
            "music_length_ms": request.music_length_ms,
            "model_id": self._model_id,
        }
        # The least busy client never runs out of connections: there are
        # enough of them for GENERATOR_CONCURRENCY requests in all.
        index = min(range(len(self._clients)), key=self._requests_in_flight.__getitem__)
        self._requests_in_flight[index] += 1
        try:
            response = await self._clients[index].post(
                MUSIC_PATH, params={"output_format": self._output_format}, json=body
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"ElevenLabs timed out: {type(exc).__name__}",
                retriable=True,
                reason="timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderError(
                f"ElevenLabs unreachable: {exc!r}", retriable=True, reason="connection"
            ) from exc
        finally:
            self._requests_in_flight[index] -= 1

        if response.is_success:
            if not response.content:
                raise ProviderError(
                    "ElevenLabs answered with no audio",
                    retriable=True,
                    status_code=response.status_code,
                    reason="empty_audio",
                )
            return response.content

        error = classify_response(response)
        if error.reason in ("unauthorized", "forbidden"):
            logger.error(
                "ElevenLabs refused the credentials (HTTP %d): configuration problem,"
                " check ELEVENLABS_API_KEY and the plan; the variant goes to the"
                " dead-letter queue",
                response.status_code,
            )
        raise error

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def classify_response(response: httpx.Response) -> ProviderError:
    """The error a non-2xx answer stands for, retriable or not."""
    status_code = response.status_code
    headers = response.headers
    detail_status, detail_message = _detail(response)
    text = detail_message or f"HTTP {status_code}"
    message = f"ElevenLabs answered {status_code}: {text}"

    if status_code in (400, 422):
        return ProviderError(
            message, retriable=False, status_code=status_code, reason="bad_request"
        )
    if status_code == 401:
        return ProviderError(
            message, retriable=False, status_code=status_code, reason="unauthorized"
        )
    if status_code == 403:
        return ProviderError(
            message, retriable=False, status_code=status_code, reason="forbidden"
        )
    if status_code == 429:
        reason = f"rate_limited:{detail_status}" if detail_status else "rate_limited"
        return ProviderError(
            message,
            retriable=True,
            status_code=status_code,
            reason=reason,
            retry_after_ms=retry_after_ms(headers),
        )
    if status_code >= 500 or status_code in _RETRIABLE_4XX:
        return ProviderError(
            message,
            retriable=True,
            status_code=status_code,
            reason=f"http_{status_code}",
            retry_after_ms=retry_after_ms(headers),
        )
    return ProviderError(
        message, retriable=False, status_code=status_code, reason=f"http_{status_code}"
    )


def retry_after_ms(headers: httpx.Headers, *, now_s: float | None = None) -> int | None:
    """How long the server asked us to wait, from ``retry-after-ms`` or
    ``Retry-After`` (seconds or an HTTP date); ``None`` when it did not say."""
    if raw_ms := headers.get("retry-after-ms"):
        try:
            return _bounded(float(raw_ms))
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return _bounded(float(raw) * 1000)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current_s = time.time() if now_s is None else now_s
    return _bounded((when.timestamp() - current_s) * 1000)


def _bounded(delay_ms: float) -> int:
    return int(min(max(delay_ms, 0.0), MAX_RETRY_AFTER_MS))


def _detail(response: httpx.Response) -> tuple[str | None, str | None]:
    """``detail.status`` and a short message from an error body, if any.

    ElevenLabs sends ``{"detail": {"status": ..., "message": ...}}``; a
    validation error sends ``{"detail": [...]}``; a proxy may send HTML.
    """
    try:
        body: Any = response.json()
    except ValueError:
        return None, _short(response.text)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        status = detail.get("status")
        message = detail.get("message")
        return (
            str(status) if status else None,
            _short(str(message)) if message else _short(str(detail)),
        )
    if detail is not None:
        return None, _short(str(detail))
    return None, _short(str(body))


def _short(text: str) -> str | None:
    text = " ".join(text.split())
    return text[:_ERROR_TEXT_MAX_CHARS] or None
