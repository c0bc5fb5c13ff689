"""Where the deployment profiles' configuration files live: ``deploy/`` at the top of the repository.

``deploy/celery.yaml`` and ``deploy/dagster-celery.yaml`` (celery profile), ``deploy/k8s/values.yaml``
(Kubernetes profile, official Dagster Helm chart).
"""

from __future__ import annotations

from attn_assets.settings import REPO_ROOT

DEPLOY_DIR = REPO_ROOT / "deploy"
