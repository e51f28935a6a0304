"""Protocol-neutral control plane: one module per resource family.

Every operation is ``fn(ctx, request) -> response`` on plain dicts shaped like the SageMaker API;
the HTTP layer, the CLI and tests all come through here.
"""
