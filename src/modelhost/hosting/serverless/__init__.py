"""Serverless hosting: the gate (hold while cold, single-flight cold starts, MaxConcurrency, scale to
zero) around any backend's fleets, and the Backend that makes them."""

from modelhost.hosting.serverless.backend import ServerlessBackend
from modelhost.hosting.serverless.gate import ServerlessFleet

__all__ = ["ServerlessBackend", "ServerlessFleet"]
