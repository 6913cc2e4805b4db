"""How the recommendation service serves: one model, each default written once.

The Serve application's args (``deployments.app.AppArgs``, from ``serve_config.yaml``) extend
it; the combiner and engine deployments take it as their config (and as ``user_config``,
changed without restarting replicas), the in-process service as its ``options``. Each reads the
fields it acts on.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from training.hybrid import HybridConfig

# What a training job runs, as a "module:function" string: serving processes never import it.
TRAIN_ENTRYPOINT = "training.pipeline:train_tenant"


class ServingOptions(BaseModel):
    # How long the step waits for the engines of a request (the slow ones are left out).
    engine_timeout_s: float = Field(default=2.0, gt=0)
    # How long a resolved model version is used before the store is read again (a promotion
    # announced on the tenant's models channel drops it at once).
    version_ttl_s: float = Field(default=2.0, ge=0)
    # MiB of similarity models the combiner holds to answer MMR's and explanations' item
    # similarity itself (a larger model is asked of its engine replica); 0: always ask.
    near_model_mb: float = Field(default=256.0, ge=0)
    # The served hybrid: a mapping given here overrides fields of the tuned default
    # (``training.hybrid.HybridConfig``); {} serves it as tuned.
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    # MMR's relevance share when diversifying (1 keeps the relevance order). Lists are
    # diversified by default: at 0.6 the ML-100K hybrid loses 0.003 NDCG@10 (the bar is 0.005)
    # and gains intra-list diversity; ``python -m benchmarks.quality --mmr-lambdas`` measures.
    mmr_lambda: float = Field(default=0.6, ge=0, le=1)
    # Models an engine replica holds at once (Serve's multiplexer), and their MiB (None:
    # ``Settings.max_model_mb``, RECSERVE_MAX_MODEL_MB): least recently used ones go first.
    max_models_per_replica: int = Field(default=4, gt=0)
    max_model_mb: float | None = Field(default=None, gt=0)
    # Concurrent calls to one deployment (and one engine model) leave as one call of at most
    # this many (``recommend.batching.CallBatcher``).
    max_batch_size: int = Field(default=32, gt=0)
    train_entrypoint: str = TRAIN_ENTRYPOINT
    # CPUs of a training task beside the serving replicas (Ray Train workers take their own).
    train_num_cpus: float = Field(default=0.5, gt=0)

    def updated(self, changes: dict[str, object]) -> ServingOptions:
        """These options with ``changes`` applied (a deployment's ``reconfigure``): a
        ``hybrid`` among them overrides the tuned default's fields, as at start."""
        return type(self).model_validate({**self.model_dump(), **changes})
