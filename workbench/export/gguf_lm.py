"""An lm-eval model backed by a GGUF file through llama.cpp, scoring exactly as the Hugging Face backend does.

Same prompts: the chat template embedded in the GGUF file, rendered by transformers' own Jinja renderer with the
file's special tokens. Same tokens: llama.cpp's tokenizer, special tokens parsed, no BOS added (the template
writes it, as lm-eval's HF backend assumes). Same decoding: greedy, stopped by the task's `until` strings or an
end-of-generation token, decoded without special tokens, cut at the first stop string. So a gate can compare the
quantized file with the model it came from, and any gap is the quantization's.
"""

from __future__ import annotations

from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import postprocess_generated_text
from tqdm import tqdm

from workbench.errors import StageError

DEFAULT_MAX_GEN_TOKS = 256


class GGUFLM(TemplateLM):
    """lm-eval LM over `path` (a GGUF file) with `threads` CPU threads and a `context`-token window."""

    def __init__(self, path: Path | str, *, threads: int = 2, context: int = 2048):
        super().__init__()
        from llama_cpp import Llama

        from workbench.export.stack import quiet_llama_logs

        quiet_llama_logs()
        self.path = Path(path)
        self.threads = threads
        self.context = context
        self.llm = Llama(model_path=str(self.path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                         seed=0, verbose=False)  # fmt: skip
        self._scorer = None  # a second context that keeps every position's logits, built on first loglikelihood
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        self.special_tokens = {
            name: self._token_text(token)
            for name, token in (("bos_token", self.llm.token_bos()), ("eos_token", self.llm.token_eos()))
            if token >= 0
        }

    def close(self) -> None:
        """Free llama.cpp's model and contexts now (at interpreter exit their finalizers may find the library
        already gone)."""
        for llm in (self.llm, self._scorer):
            if llm is not None:
                llm.close()
        self._scorer = None

    def _token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    # -- what lm-eval asks of a chat model ------------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return self.path.stem

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        if not self.template:
            raise StageError(f"{self.path.name} carries no chat template (tokenizer.chat_template)")
        rendered, _ = render_jinja_template(
            conversations=[chat_history], chat_template=self.template, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt, **self.special_tokens,
        )  # fmt: skip
        return rendered[0]

    @property
    def eot_token_id(self) -> int:
        return self.llm.token_eos()

    @property
    def prefix_token_id(self) -> int:
        bos = self.llm.token_bos()
        return bos if bos >= 0 else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.llm.tokenize(string.encode("utf-8"), add_bos=bool(add_special_tokens), special=True)

    def decode(self, tokens: list[int]) -> str:
        """Tokens as text without special (control) tokens, like transformers' `skip_special_tokens=True`."""
        return self.llm.detokenize(tokens, special=False).decode("utf-8", errors="ignore")

    # -- generation -------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for request in tqdm(requests, desc="Generating with llama.cpp", disable=disable_tqdm):
            context, gen_kwargs = request.args
            results.append(self.greedy(context, dict(gen_kwargs)))
        return results

    def greedy(self, context: str, gen_kwargs: dict) -> str:
        """Greedy continuation of `context` up to `max_gen_toks` tokens or the first `until` string."""
        import llama_cpp

        if gen_kwargs.get("do_sample") or gen_kwargs.get("temperature", 0.0) > 0.0:
            raise StageError("GGUF evaluation decodes greedily; a task asked for sampling (do_sample/temperature)")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        prompt = self.tok_encode(context)
        if len(prompt) + max_new > self.context:
            prompt = prompt[-(self.context - max_new) :]  # left-truncate, as lm-eval's HF backend does
        vocab = self.llm._model.vocab
        self.llm.reset()  # no KV reuse across prompts: LFM2's convolution state cannot be rewound
        generated: list[int] = []
        for token in self.llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            generated.append(token)
            if len(generated) >= max_new or (until and _has_stop(self.decode(generated), until)):
                break
        return postprocess_generated_text(self.decode(generated), until, None)

    # -- log-likelihoods (multiple-choice tasks) ------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        import numpy as np

        scorer = self._scoring_context()
        results = []
        for _, context, continuation in tqdm(requests, desc="Scoring with llama.cpp", disable=disable_tqdm):
            tokens = (context + continuation)[-self.context :]
            scorer.reset()
            scorer.eval(tokens)
            logits = np.asarray(scorer.scores[: len(tokens)], dtype=np.float64)
            start = len(tokens) - len(continuation)
            rows = logits[start - 1 : len(tokens) - 1]
            shifted = rows - rows.max(axis=1, keepdims=True)
            logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            picked = logprobs[np.arange(len(continuation)), continuation]
            greedy = bool((rows.argmax(axis=1) == np.asarray(continuation)).all())
            results.append((float(picked.sum()), greedy))
        return results

    def _scoring_context(self):
        if self._scorer is None:
            from llama_cpp import Llama

            self._scorer = Llama(model_path=str(self.path), n_ctx=self.context, n_threads=self.threads,
                                 n_threads_batch=self.threads, logits_all=True, seed=0, verbose=False)  # fmt: skip
        return self._scorer

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise StageError("GGUF evaluation runs generation and multiple-choice tasks, not rolling perplexity ones")


def _has_stop(text: str, until: list[str]) -> bool:
    return any(stop and stop in text for stop in until)
