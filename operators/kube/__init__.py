"""The Kubernetes side: kopf handlers for VideoServingPolicy and the RayService patching they do."""

GROUP = "wanserve.io"
VERSION = "v1alpha1"
PLURAL = "videoservingpolicies"
RAY_GROUP = "ray.io"
RAY_VERSION = "v1"
RAY_PLURAL = "rayservices"
