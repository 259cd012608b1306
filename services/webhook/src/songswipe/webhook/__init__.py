"""SongSwipe webhook service."""
