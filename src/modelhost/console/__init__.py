"""The web console at ``/console``: pages over the control plane and the metrics, actions through the
same control-plane operations as the API (``backend.ConsoleBackend``, provided by server/), one
server-sent-events stream per page. It never imports hosting/ internals, backends/ or serving/."""

from modelhost.console.app import Console
from modelhost.console.backend import ConsoleBackend, InvokeAnswer

__all__ = ["Console", "ConsoleBackend", "InvokeAnswer"]
