"""The one HTTP front door: control plane (JSON 1.1) and runtime on the same port."""
