"""Contracts every SongSwipe service shares."""
