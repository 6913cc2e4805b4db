"""The recommendation service without a transport: request and response types, the one
recommendation step, scoring, fan-out, batching, cold-start sources, vector similarity, the
model cache and the in-process service. Ray Serve wraps it in ``deployments``; GraphQL calls it
through ``recommend.types.RecommendationService``."""
