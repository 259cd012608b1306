"""SongSwipe orchestrator service."""
