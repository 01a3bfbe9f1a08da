"""Training, shared by the `pretrain` and `finetune` stages (and `tokenize` for its shards).

    model_shapes  PhiConfig keyword sets (tiny, phi-1-small, phi-1), FLOPs, peak FLOP/s
    data          token shards on disk and their read order
    tokenizers    a local HF tokenizer folder; the fingerprint tying shards to it
    loop          the Accelerate loop: checkpoints, exact resume
    track         per-step metrics to CSV and MLflow
    run           one training stage: its MLflow run, the loop, the export and metrics
"""
