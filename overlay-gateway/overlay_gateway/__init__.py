"""Overlay gateway: Redis AI events to browsers over WebSocket."""
