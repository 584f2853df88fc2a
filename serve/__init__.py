"""wanserve data plane: model stages, Ray Serve deployments, HTTP API, cache, jobs, metrics."""
