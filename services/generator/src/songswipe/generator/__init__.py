"""SongSwipe generator service."""
