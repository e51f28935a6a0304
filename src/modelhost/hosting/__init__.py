"""The data plane on the front door's side: instances, fleets, routing, reconciliation."""
