"""transformers ``generate`` behind the same interface as the vLLM engine (debugging, baseline).

Selected with ``RolloutPool(backend="hf")``; it runs in the same Ray worker actor as
the vLLM engine, so pool, weight sync (CPU shared-memory files) and failure handling
are shared. Prompts are left-padded and generated ``hf_batch_prompts`` at a time with
``num_return_sequences=n``.

Sampler logprobs match vLLM's ``processed_logprobs``: temperature, top-k and top-p are
applied by our own processor list (generate's built-in warpers are switched off so
they do not run twice) and a last processor records log_softmax of the processed
scores for the token sampled from them. Only one [rows, V] step is held at a time.
Stop strings: the completion ends with the token that completes the stop string, its
text is cut before the stop string (vLLM's default, include_stop_str_in_output=False).
"""

from __future__ import annotations

import torch

from rollout.types import Completion, EngineSpec, SamplingSpec


class _SampledLogprobRecorder:
    """Last logits processor: logprob of each sampled token under the processed distribution."""

    def __init__(self):
        self.prev: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:  # input_ids now ends with the token drawn from self.prev
            self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.LongTensor) -> torch.Tensor:
        """[rows, new_tokens] logprobs, given the last sampled column."""
        if self.prev is not None:
            self.steps.append(self.prev.gather(1, last_tokens[:, None]).squeeze(1))
        self.prev = None
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros(last_tokens.shape[0], 0)


def _warpers(sampling: SamplingSpec) -> list:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out = []
    if sampling.temperature > 0 and sampling.temperature != 1.0:
        out.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k > 0:
        out.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=sampling.top_p))
    return out


class HFEngine:
    """A transformers causal LM that generates like ``VLLMEngine`` (same methods, same outputs)."""

    def __init__(self, spec: EngineSpec, worker_index: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        dtype = getattr(torch, spec.dtype) if spec.dtype != "auto" else "auto"
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the actor's GPU, if given one
        self.model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=dtype).eval().to(self.device)
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.worker_index = worker_index
        torch.manual_seed(spec.seed + worker_index)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSpec,
                 first_index: int = 0) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed + self.worker_index)
        step = max(1, self.spec.hf_batch_prompts)
        for start in range(0, len(prompt_ids), step):
            out += self._generate_chunk(prompt_ids[start:start + step], sampling, first_index + start)
        return out

    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingSpec,
                        first_index: int) -> list[list[Completion]]:
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: every row's last prompt token is at the same column
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        max_new = min(sampling.max_tokens, self.spec.max_model_len - width)
        do_sample = sampling.temperature > 0
        # greedy: HF refuses n > 1 without sampling; the n copies are identical anyway, so decode once
        rows_per_prompt = sampling.n if do_sample else 1
        config = GenerationConfig(
            max_new_tokens=max_new, do_sample=do_sample, num_return_sequences=rows_per_prompt,
            temperature=None, top_k=None, top_p=None,  # our own warpers below; generate must not add its own
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            stop_strings=list(sampling.stop) or None)
        recorder = _SampledLogprobRecorder() if sampling.logprobs else None
        processors = (_warpers(sampling) if do_sample else []) + ([recorder] if recorder else [])
        seqs = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config,
            logits_processor=LogitsProcessorList(processors),
            tokenizer=self.tokenizer if sampling.stop else None)
        new = seqs[:, width:]
        logps = recorder.finish(new[:, -1]).cpu() if recorder is not None and new.shape[1] else None
        new = new.cpu()
        groups = []
        for i in range(len(prompts)):
            group = []
            for j in range(sampling.n):
                row = i * rows_per_prompt + j % rows_per_prompt  # generate repeats each prompt in a row
                group.append(self._completion(new[row].tolist(), None if logps is None else logps[row].tolist(),
                                              sampling, first_index + i))
            groups.append(group)
        return groups

    def _completion(self, tokens: list[int], logps: list[float] | None, sampling: SamplingSpec,
                    prompt_index: int) -> Completion:
        finish = "length"
        end = len(tokens)
        for k, t in enumerate(tokens):  # finished rows are padded after their EOS
            if t in self.eos_ids:
                end, finish = k + 1, "stop"
                break
        if sampling.stop:  # shortest prefix whose text contains a stop string (rows are padded after it)
            for k in range(1, end + 1):
                text = self.tokenizer.decode(tokens[:k], skip_special_tokens=True)
                hit = min((text.find(s) for s in sampling.stop if s in text), default=-1)
                if hit >= 0:
                    ids = tokens[:k]
                    return Completion(prompt_index, ids, logps[:k] if logps is not None else None, text[:hit], "stop")
        ids = tokens[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(prompt_index, ids, logps[:end] if logps is not None else None, text, finish)

    @torch.no_grad()
    def reload_from_files(self, paths: list[str], timeout_s: float | None = None) -> int:
        from rollout.weight_sync.safetensors_file import mapped_bucket_files

        tensors = dict(self.model.named_parameters())
        tensors.update(dict(self.model.named_buffers()))
        count = 0
        with mapped_bucket_files(paths) as named:
            for name, value in named:
                if name not in tensors:
                    raise KeyError(f"weight sync: {name!r} is not a parameter of the hf rollout model")
                tensors[name].copy_(value)
                count += 1
        return count

    def finish_weight_sync(self) -> None:
        pass

    def shutdown(self) -> None:
        self.model = None
