"""Batch transform: split input objects into records, pack them into requests, run them through a
job's own instances, and assemble one ``.out`` object per input object (see docs/architecture.md)."""
