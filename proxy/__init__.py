"""tagrelay: a self-hosted, server-side tag manager."""

__version__ = "0.1.0"
