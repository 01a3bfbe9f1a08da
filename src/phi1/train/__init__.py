"""Training: stages `tokenize` (tokenize.py), `pretrain` (pretrain.py), `finetune` (finetune.py).

    phi1 tokenize && phi1 pretrain && phi1 finetune

Shared parts: presets.py (PhiConfig keyword sets), data.py (token shards, read order),
loop.py (the Accelerate loop, checkpoints, exact resume), track.py (CSV + MLflow metrics),
stage.py (MLflow run, export, metrics around the loop).
"""
