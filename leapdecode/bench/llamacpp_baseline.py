"""A second outside reference: llama.cpp (through llama-cpp-python) on the model's own GGUF file.

The bench builds it in a worker process of its own (`worker.py`): llama.cpp's thread pool and torch's never
share a process.

`llamacpp` is plain greedy decoding, `llamacpp-pld` llama-cpp-python's prompt-lookup decoding. Both get the
engine's prompt token ids, stop ids and thread count. llama.cpp computes with its own quantized kernels (the
GGUF's Q4_1 weights against 8-bit-quantized activations), so its greedy output need not match hf's token for
token; what it shows is the speed of a mature C++ runtime on the same file.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from leapdecode.bench.record import Generation
from leapdecode.errors import LeapError, ModelLoadError, one_line
from leapdecode.models.registry import KNOWN_MODELS, fetch_known

INSTALL_HINT = 'pip install -e ".[llamacpp]"'
PLD_TOKENS = 10  # draft length, the same as hf-pld's
N_CTX = 4096  # KV slots per llama.cpp context: prompt + answer + one draft must fit


def require_llama_cpp() -> Any:
    """The llama_cpp module, or a one-line error saying how to install it."""
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: its shared library failed to load
        raise LeapError(
            f"the llamacpp methods need llama-cpp-python ({one_line(exc)}); install it with: {INSTALL_HINT}"
        ) from exc
    return llama_cpp


def check_llama_cpp() -> None:
    """require_llama_cpp's check without the import: llama.cpp is only ever loaded in a baseline's worker."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise LeapError(f"the llamacpp methods need llama-cpp-python (not installed); install it with: {INSTALL_HINT}")


def extra_buffers_enabled(llama_cpp: Any) -> bool:
    """Whether llama.cpp may move weights into its extra CPU buffer types (AMX tiles, repacked layouts).

    Not on a CPU with AMX: ggml's AMX matmul segfaults on the first batched forward there (ggml-org/llama.cpp
    issue 20824, reproduced with llama-cpp-python 0.3.36 on this model), and the AMX buffer type is tried
    first. Turning extra buffers off also turns off the repacked Q8_0 layout, so this costs llama.cpp a little."""
    return "AMX_INT8 = 1" not in llama_cpp.llama_print_system_info().decode(errors="replace")


@contextmanager
def _model_params(llama_cpp: Any, use_extra_bufts: bool) -> Iterator[None]:
    """Llama() takes no argument for llama_model_params.use_extra_bufts: where they must be off, set it on
    the defaults it starts from, for the duration of one constructor call (in the bench, inside the worker
    process that holds llama.cpp alone); where they may stay on, llama_cpp is left as it is."""
    if use_extra_bufts:
        yield
        return
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params

    def params() -> Any:
        p = default()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = use_extra_bufts
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def runtime_info() -> dict[str, Any]:
    """What the report records about llama.cpp, when a llamacpp method ran."""
    llama_cpp = require_llama_cpp()
    return {"version": getattr(llama_cpp, "__version__", "?"), "extra_buffers": extra_buffers_enabled(llama_cpp)}


def gguf_file(spec: str) -> Path:
    """The GGUF file llama.cpp loads for a model spec: a known model's (fetched on first use) or a .gguf path."""
    if spec in KNOWN_MODELS:
        return fetch_known(KNOWN_MODELS[spec])
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    what = "a Hugging Face directory" if path.is_dir() else "not a .gguf file" if path.exists() else "not found"
    known = ", ".join(KNOWN_MODELS)
    raise LeapError(
        f"the llamacpp methods need a GGUF file, but model {spec!r} is {what}: "
        f"pass a .gguf path or a known model name ({known})"
    )


class LlamaCppBaseline:
    """One llama.cpp context on a GGUF file; prompt lookup is fixed when it is built (a draft model is a
    constructor argument in llama-cpp-python), so plain and pld are two instances."""

    def __init__(
        self, gguf: Path, threads: int, eos_ids: Sequence[int], prompt_lookup: bool = False, n_ctx: int = N_CTX
    ) -> None:
        llama_cpp = require_llama_cpp()
        extra: dict[str, Any] = {}
        if prompt_lookup:
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            extra["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=PLD_TOKENS)
        self.extra_buffers = extra_buffers_enabled(llama_cpp)
        try:
            with _model_params(llama_cpp, self.extra_buffers):
                self.llm = llama_cpp.Llama(
                    model_path=str(gguf),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    logits_all=False,  # a draft model turns it on: verifying a draft needs each position's logits
                    verbose=False,
                    **extra,
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {gguf}: {one_line(exc)}") from exc
        self.n_ctx = n_ctx
        self.eos_ids = frozenset(eos_ids)
        self.prompt_lookup = prompt_lookup
        self.forwards = 0
        self._count_forwards()

    def runtime_info(self) -> dict[str, Any]:
        """The report's machine fields for llama-cpp-python, read in the worker that loaded it."""
        info = runtime_info()
        return {"llama_cpp_python": info["version"], "llama_cpp_extra_buffers": info["extra_buffers"]}

    def _count_forwards(self) -> None:
        """Count Llama.eval calls (one per target forward, the prefill included), for tokens per forward."""
        inner = self.llm.eval

        def counted(tokens: Sequence[int]) -> None:
            self.forwards += 1
            inner(tokens)

        self.llm.eval = counted  # generate() looks eval up on the instance

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy decoding from a fresh prefill; with prompt lookup, llama-cpp-python's own n-gram drafts."""
        if len(prompt_ids) + max_new_tokens + PLD_TOKENS + 1 > self.n_ctx:
            raise LeapError(
                f"llamacpp: a {len(prompt_ids)}-token prompt plus {max_new_tokens} new tokens does not fit "
                f"its {self.n_ctx}-token context"
            )
        # Forget the last prompt: generate() would otherwise reuse the KV of a shared prefix (the chat
        # template's), and skip prefill work that every other method pays for.
        self.llm.reset()
        self.forwards = 0
        ids: list[int] = []
        start = time.perf_counter()
        # temp=0 makes llama-cpp-python's sampler chain penalties -> greedy; with penalties neutral
        # (repeat 1, frequency and presence 0) that is argmax. top_k/min_p are only read when temp > 0.
        stream = self.llm.generate(
            prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, typical_p=1.0,
            repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, reset=True,
        )  # fmt: skip
        try:
            for tok in stream:  # generate() never stops by itself: EOS and the budget are ours to check
                ids.append(int(tok))
                if tok in self.eos_ids or len(ids) >= max_new_tokens:
                    break
        finally:
            stream.close()
        seconds = time.perf_counter() - start
        finish = "stop" if ids and ids[-1] in self.eos_ids else "length"
        accepted = len(ids) / self.forwards if self.forwards else None
        return Generation(ids, seconds, accepted, finish, {"forwards": self.forwards})
