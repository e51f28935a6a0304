"""Persistence: the metadata database and the URI-addressed object store."""
