"""Deployment profiles: where runs and steps execute, and where the instance keeps its records.

- ``local`` (default): Dagster's multiprocess executor on one machine, SQLite instance.
- ``celery``: ``ATTN_ASSETS_EXECUTOR=celery``; each step is a Celery task (Redis broker) that any
  worker may take, one worker per GPU; runs and event logs in PostgreSQL (dagster-postgres) so
  every machine sees the same instance. Config: ``deploy/celery.yaml``, ``deploy/dagster-celery.yaml``.
- ``k8s``: ``ATTN_ASSETS_EXECUTOR=k8s``; K8sRunLauncher + k8s_job_executor, one pod per step, a GPU
  for each shard step. Config: ``deploy/k8s/values.yaml`` (official Dagster Helm chart).

Nothing here is imported unless a profile is chosen, so dagster-celery / dagster-k8s stay optional.
Each shard records the worker that computed it (``process_identity.worker_identity``: host, pid, CUDA_VISIBLE_DEVICES).
"""
