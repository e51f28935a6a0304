"""The code that runs inside one instance process: the SageMaker container contract (/ping, /invocations)."""
