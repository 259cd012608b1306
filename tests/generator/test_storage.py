from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr

from songswipe.generator.storage import LocalStorage, SupabaseStorage
from songswipe.shared.errors import StorageError
from tests.generator.fake_elevenlabs import fake_elevenlabs

OBJECT_PATH = "user-1/order-1/variant-2.mp3"


async def test_local_storage_writes_the_bucket_layout_and_overwrites(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)

    await storage.upload(OBJECT_PATH, b"first")
    await storage.upload(OBJECT_PATH, b"second")

    assert (tmp_path / OBJECT_PATH).read_bytes() == b"second"
    assert list((tmp_path / "user-1" / "order-1").iterdir()) == [tmp_path / OBJECT_PATH]


async def test_local_storage_makes_a_folder_removed_after_it_wrote_there_again(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    await storage.upload(OBJECT_PATH, b"first")
    shutil.rmtree(tmp_path / "user-1")

    await storage.upload("user-1/order-1/variant-3.mp3", b"third")

    assert (tmp_path / "user-1/order-1/variant-3.mp3").read_bytes() == b"third"
    assert (tmp_path / "user-1/order-1/variant-3.mp3").stat().st_mode & 0o777 == 0o644


async def test_supabase_storage_upserts_with_the_service_role_key() -> None:
    with fake_elevenlabs() as fake:
        storage = SupabaseStorage(
            url=fake.url,
            service_role_key=SecretStr("service-key"),
            timeout_s=5,
            max_connections=1,
        )
        try:
            await storage.upload(OBJECT_PATH, b"mp3 bytes")
        finally:
            await storage.aclose()

    [upload] = fake.uploads()
    assert upload.path == f"/storage/v1/object/songs/{OBJECT_PATH}"
    assert upload.headers["authorization"] == "Bearer service-key"
    assert upload.headers["apikey"] == "service-key"
    assert upload.headers["x-upsert"] == "true"
    assert upload.headers["content-type"] == "audio/mpeg"
    assert upload.body == b"mp3 bytes"


async def test_an_unreachable_supabase_is_a_retriable_storage_error() -> None:
    with fake_elevenlabs() as gone:
        url = gone.url
    storage = SupabaseStorage(
        url=url, service_role_key=SecretStr("k"), timeout_s=1, max_connections=1
    )
    try:
        with pytest.raises(StorageError) as raised:
            await storage.upload(OBJECT_PATH, b"x")
    finally:
        await storage.aclose()

    assert raised.value.retriable
