"""The provider and the storage the settings ask for."""

from __future__ import annotations

from songswipe.generator.elevenlabs import ElevenLabsProvider
from songswipe.generator.provider import MusicProvider
from songswipe.generator.settings import GeneratorSettings, ProviderChoice
from songswipe.generator.storage import LocalStorage, SongStorage, SupabaseStorage
from songswipe.generator.synth import InstantProvider, OfflineProvider
from songswipe.shared.errors import ConfigurationError


def make_provider(settings: GeneratorSettings) -> MusicProvider:
    choice = settings.provider
    if choice is ProviderChoice.OFFLINE:
        return OfflineProvider()
    if choice is ProviderChoice.INSTANT:
        return InstantProvider()
    if settings.elevenlabs_api_key is None:
        raise ConfigurationError("the ElevenLabs provider needs ELEVENLABS_API_KEY")
    return ElevenLabsProvider(
        api_key=settings.elevenlabs_api_key,
        base_url=settings.elevenlabs_base_url,
        model_id=settings.elevenlabs_model_id,
        output_format=settings.elevenlabs_output_format,
        connect_timeout_s=settings.elevenlabs_connect_timeout_s,
        read_timeout_s=settings.elevenlabs_read_timeout_s,
        max_connections=settings.generator_concurrency,
    )


def make_storage(settings: GeneratorSettings) -> SongStorage:
    if settings.supabase_url is None or settings.supabase_service_role_key is None:
        return LocalStorage(settings.songs_dir)
    return SupabaseStorage(
        url=settings.supabase_url,
        service_role_key=settings.supabase_service_role_key,
        timeout_s=settings.storage_timeout_s,
        max_connections=settings.generator_concurrency,
    )
