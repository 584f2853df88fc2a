"""The Ray Serve application: stage deployments, the HTTP ingress and the typed builder that binds them."""
