"""Models out of modelhost: ``inspect`` (what an artifact holds and how to load it outside modelhost),
``export`` (a directory that serves the model anywhere: Dockerfile, Kubernetes, ECS, compose) and
``serve-model`` (the SageMaker container contract on port 8080 for one model, without a server)."""
