"""phi1: the phi-1 recipe (Textbooks Are All You Need) as a DVC + MLflow pipeline.

Importing phi1 turns the Hugging Face libraries offline unless the user already chose:
phi1 loads models, tokenizers and datasets from local folders, and a local path that
does not exist must fail at once, not after minutes of hub retries. Opt in to the hub
(e.g. `ingest` from a hub dataset id) with `HF_HUB_OFFLINE=0` in the environment.
"""

import os

_offline = "0" if os.environ.get("HF_HUB_OFFLINE", "1").lower() in ("0", "false", "no") else "1"
for _key, _value in {
    "HF_HUB_OFFLINE": _offline,  # one switch for the three libraries
    "HF_DATASETS_OFFLINE": _offline,
    "TRANSFORMERS_OFFLINE": _offline,
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(_key, _value)
