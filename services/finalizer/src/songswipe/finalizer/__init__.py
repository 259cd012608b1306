"""SongSwipe finalizer service."""
