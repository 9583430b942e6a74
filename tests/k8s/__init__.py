"""A Kubernetes API server double for tests: the real wire format, backed by the Docker engine."""
