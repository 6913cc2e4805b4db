"""Training jobs: their records, the runners that start them (a thread or a Ray task), the
retraining scheduler and its policy."""
