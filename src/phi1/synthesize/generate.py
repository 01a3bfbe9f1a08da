"""The LLM generator backends: prompts with the drawn topic, audience and function name,
sent to an OpenAI-compatible endpoint (`openai`) or a local HF causal LM (`transformers`),
and the parsing of the answers into textbook sections and exercises.

    gen = OpenAIGenerator(cfg)            # or TransformersGenerator(cfg)
    texts = gen.generate([textbook_messages(r) for r in requests], seeds=[r.seed for r in requests])
    section = parse_textbook(texts[0])    # markdown text, or a drop reason
    ex = parse_exercise(texts[1], "count_vowels")   # Exercise, or a drop reason

The openai backend goes through phi1.engines.llm.ChatClient: bounded concurrency, retries, and a
response cache written as each answer arrives, so a run of a million requests that is
interrupted resumes where it stopped (finished requests are read from the cache).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines.progress import progress_bar
from phi1.synthesize.exercise import Exercise, exercise_from_source
from phi1.engines.markdown import python_blocks
from phi1.synthesize.lists import Request

Messages = list[dict[str, str]]

SYSTEM = "You are an expert Python teacher who writes clear, correct, self-contained teaching material."


def textbook_messages(req: Request) -> Messages:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": (
                f"Write one section of a Python textbook on the topic: {req.topic}.\n"
                f"The reader: {req.audience}.\n"
                "Teach by explaining a concept in a few short paragraphs, then showing it in a "
                "short runnable example in a ```python code block, and alternate the two. Use "
                "only the standard library. Start with a markdown heading."
            ),
        },
    ]


def exercise_messages(req: Request) -> Messages:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": (
                f"Write one Python exercise on the topic: {req.topic}, for {req.audience}.\n"
                f"It is a single function named `{req.function_name}` with type hints and a "
                "docstring that states the task and gives two or three examples in doctest "
                "form (>>> call, then the expected result), followed by a correct "
                "implementation. Import what you use at the top; use only the standard "
                "library. Answer with one ```python code block and nothing else."
            ),
        },
    ]


def parse_textbook(answer: Optional[str]) -> str:
    """The section text when it carries code and every code block parses, else the reason
    (`empty_response`, `no_code`, `code_unparsable`)."""
    if not answer or not answer.strip():
        return "empty_response"
    blocks = python_blocks(answer)
    if not blocks:
        return "no_code"
    for b in blocks:
        try:
            ast.parse(b)
        except (SyntaxError, ValueError):
            return "code_unparsable"
    return answer.strip() + "\n"


def parse_exercise(answer: Optional[str], function_name: str) -> Exercise | str:
    """The exercise defined by the answer's first ```python block (or the whole answer when
    it has no fence), or a drop reason (`empty_response`, `unparsable`,
    `wrong_function_name`, `no_docstring`, `not_self_contained`, ...)."""
    if not answer or not answer.strip():
        return "empty_response"
    blocks = python_blocks(answer)
    code = blocks[0] if blocks else answer
    return exercise_from_source(code, function_name)


class OpenAIGenerator:
    """Chat completions through the shared LLM client (phi1.engines.llm), one request per record.

    Each request carries its own `seed` in the body, so it is the same request (and the same
    cache entry) on every run, and two requests with the same topic, audience and name still
    get separate answers. ChatClient applies one set of params per call, so requests go out
    as single-request calls from `concurrency` threads."""

    def __init__(self, cfg: Any, progress: bool = True) -> None:
        from phi1.engines.llm import ChatClient

        self.cfg = cfg
        self.model = cfg.model
        self.progress = progress
        self.client = ChatClient(
            cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, concurrency=1,
            max_retries=cfg.max_retries, timeout=cfg.timeout, cache_dir=cfg.cache_path, progress=False,
        )

    def generate(self, batch: Sequence[Messages], seeds: Sequence[int], description: str = "synthesize") -> list[Optional[str]]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        out: list[Optional[str]] = [None] * len(batch)
        params = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_new_tokens}
        # Submitted in windows, so a million requests never sit in memory as futures at once.
        window = self.cfg.concurrency * 32
        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency)
        try:
            with progress_bar(len(batch), description, enabled=self.progress) as update:
                done = 0
                for start in range(0, len(batch), window):
                    futures = {pool.submit(self.client.complete, batch[i], seed=int(seeds[i]), **params): i
                               for i in range(start, min(start + window, len(batch)))}
                    for fut in as_completed(futures):
                        out[futures[fut]] = fut.result()  # an LLMError stops the run; answers so far stay cached
                        done += 1
                        update(done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return out


class TransformersGenerator:
    """Batched sampling from a local HF causal LM directory (chat template when it has one)."""

    def __init__(self, cfg: Any, progress: bool = True) -> None:
        from phi1.engines.generation import check_model_dir, load_model

        model_dir = check_model_dir(Path(cfg.model_dir).expanduser(), "synthesize.model_dir")
        try:
            self.lm = load_model(model_dir, dtype="float32")  # data: the same on any hardware
        except Phi1Error as exc:
            raise Phi1Error(f"synthesize.model_dir: {exc}") from None
        self.tokenizer = self.lm.tokenizer
        self.cfg = cfg
        self.model = str(model_dir)
        self.progress = progress

    def _prompt(self, messages: Messages) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate(self, batch: Sequence[Messages], seeds: Sequence[int], description: str = "synthesize") -> list[Optional[str]]:
        import torch

        from phi1.engines.generation import complete

        out: list[Optional[str]] = []
        bs = self.cfg.batch_size
        with progress_bar(len(batch), description, enabled=self.progress) as update:
            for start in range(0, len(batch), bs):
                prompts = [self._prompt(m) for m in batch[start : start + bs]]
                # The batch's first request seed makes the batch reproducible.
                torch.manual_seed(int(seeds[start]))
                out.extend(complete(self.lm, prompts, max_new_tokens=self.cfg.max_new_tokens,
                                    temperature=self.cfg.temperature))
                update(len(out))
        return out


__all__ = ["textbook_messages", "exercise_messages", "parse_textbook", "parse_exercise",
           "OpenAIGenerator", "TransformersGenerator"]
