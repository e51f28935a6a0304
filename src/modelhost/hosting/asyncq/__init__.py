"""Asynchronous inference: a durable request queue, its dispatcher and the commit protocol.

Every accepted InvokeEndpointAsync request is a row of ``async_requests``, with its inline body,
committed before the 202 goes out (group commit: the accepts that arrive while one transaction
runs share the next, queue.py). The row moves through

    Pending --claim--> InProgress --(output in a temp file)--> Completing --> Completed | Failed

* **Claim** (dispatcher.py). Each replica gets up to ``MaxConcurrentInvocationsPerInstance``
  requests, oldest first (``seq`` order). A claim sets the lease (queue.py): the owner is this
  server run, and ``attempts`` counts the runs started. A request whose ``RequestTTLSeconds``
  passed while it waited expires at its claim.
* **Exchange** (exchange.py). The input is streamed from its file or object (BlobStore) to the
  replica (``FleetHandle.invoke_stream``) and the response into a temp file: nothing is held
  whole, whatever the size. ``InvocationTimeoutSeconds`` bounds the whole exchange.
* **Commit, in two steps** (committer.py). (1) ``Completing`` is written with the outcome; (2)
  the temp file is installed as the object (``BlobStore.put_file``, atomic) and the row becomes
  ``Completed`` (or ``Failed``). A crash between the steps is finished at the next start. So an
  output is written whole or not at all, and a request reaches ``Completed``/``Failed`` once.
* **Restart** (recovery.py). Rows ``InProgress`` go back to ``Pending`` and run again, oldest
  first; after ``MAX_ATTEMPTS`` interrupted runs a request fails instead of looping. A replica
  that goes away mid-request has its request re-queued the same way, to run on another one.
  The model may therefore *execute* a request more than once; it *completes* once.
* **Notifications** (notify.py) are stored with the outcome and sent after the commit (at least
  once: a crash before the send re-sends at the next start).
* **Endpoints** (endpoints.py): which endpoints are async, pushed by the control loop
  (``AsyncInference.sync_endpoints``).

Output object: ``<S3OutputPath>[/<S3OutputPathExtension>]/<Filename or InferenceId.out>``;
failure object: ``<S3FailurePath>[/<S3OutputPathExtension>]/<Filename or InferenceId>-error.out``
holding the failure reason (text/plain). Without ``S3FailurePath`` a failure is reported only in
the error notification.
"""

from modelhost.hosting.asyncq.items import INLINE_MAX, MAX_ATTEMPTS
from modelhost.hosting.asyncq.service import AsyncInference

__all__ = ["INLINE_MAX", "MAX_ATTEMPTS", "AsyncInference"]
