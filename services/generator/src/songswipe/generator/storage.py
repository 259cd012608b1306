"""Where finished audio goes: Supabase Storage, or a local folder.

Both keep the bucket's layout, ``{user_id}/{order_id}/variant-{n}.mp3``, and
both overwrite, so uploading the same variant again after a retry is
harmless. The local folder ``SONGS_DIR`` stands for the ``songs`` bucket: an
object ``a/b/variant-1.mp3`` is the file ``SONGS_DIR/a/b/variant-1.mp3``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import SecretStr

from songswipe.shared.errors import StorageError
from songswipe.shared.paths import SONGS_BUCKET

logger = logging.getLogger(__name__)

AUDIO_CONTENT_TYPE = "audio/mpeg"
_ERROR_TEXT_MAX_CHARS = 300


class SongStorage(Protocol):
    #: A short label for logs and metrics.
    name: str

    async def upload(self, object_path: str, audio: bytes) -> None:
        """Store ``audio`` at ``object_path``, replacing what is there."""

    async def aclose(self) -> None: ...


#: Folders this process made or found lately, whose mkdir can be skipped.
KNOWN_FOLDERS_MAX = 4_096


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        # An order's three variants share a folder: one mkdir, not three.
        self._known_folders: dict[Path, None] = {}

    def path_of(self, object_path: str) -> Path:
        return self.root / object_path

    async def upload(self, object_path: str, audio: bytes) -> None:
        path = self.path_of(object_path)
        try:
            try:
                known = path.parent in self._known_folders
                await asyncio.to_thread(_write_atomically, path, audio, not known)
            except FileNotFoundError:
                if not known:
                    raise
                # Removed since: make it again.
                await asyncio.to_thread(_write_atomically, path, audio, True)
            self._remember(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {object_path} under {self.root}") from exc

    async def aclose(self) -> None:
        return None

    def _remember(self, folder: Path) -> None:
        self._known_folders[folder] = None
        if len(self._known_folders) > KNOWN_FOLDERS_MAX:
            del self._known_folders[next(iter(self._known_folders))]


def _write_atomically(path: Path, data: bytes, make_folder: bool = True) -> None:
    """Readers see the old file or the new one, never half of one."""
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            # Whatever the umask: a song is for people to play.
            os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class SupabaseStorage:
    """``POST /storage/v1/object/{bucket}/{path}`` with ``x-upsert: true``."""

    name = "supabase"

    def __init__(
        self,
        *,
        url: str,
        service_role_key: SecretStr,
        timeout_s: float,
        max_connections: int,
        bucket: str = SONGS_BUCKET,
    ) -> None:
        key = service_role_key.get_secret_value()
        self._bucket = bucket
        self._client = httpx.AsyncClient(
            base_url=f"{url}/storage/v1",
            headers={"Authorization": f"Bearer {key}", "apikey": key},
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def upload(self, object_path: str, audio: bytes) -> None:
        try:
            response = await self._client.post(
                f"/object/{self._bucket}/{object_path}",
                content=audio,
                headers={"Content-Type": AUDIO_CONTENT_TYPE, "x-upsert": "true"},
            )
        except httpx.TransportError as exc:
            raise StorageError(
                f"Supabase Storage unreachable for {object_path}: {exc!r}"
            ) from exc
        if response.is_success:
            return

        status = response.status_code
        detail = " ".join(response.text.split())[:_ERROR_TEXT_MAX_CHARS]
        retriable = status >= 500 or status in (408, 429)
        if status in (401, 403):
            logger.error(
                "Supabase Storage refused the service role key (HTTP %d):"
                " configuration problem, check SUPABASE_URL and"
                " SUPABASE_SERVICE_ROLE_KEY; the variant goes to the dead-letter queue",
                status,
            )
        raise StorageError(
            f"Supabase Storage answered {status} for {object_path}: {detail}",
            retriable=retriable,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
