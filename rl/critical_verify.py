"""Rollout verification of critical tokens (cDPO, arXiv 2411.19943, §3.3 of specs/dpo_methods.md).

For each incorrect trajectory y of prompt x (the pairs' rejected responses, first ``num_trajectories``):

    WITH_i     = ``rollouts`` continuations sampled from x + y_<=i, for every response position i
                 (all prefixes of one trajectory in ONE generate call);   c_i = #correct among them
    k          = critical_index(c, zero, recover)   (official ``analyse_all_token``, rl/credit/critical.py):
                 the first i with c_i <= zero whose correctness never recovers (no later c_j > recover)
    alt_j      ~ pi(. | x, y_<k) with pi(y_k | x, y_<k) set to 0, renormalised; ``rollouts`` draws
    WITHOUT_k  = one continuation from x + y_<k + alt_j for each draw   (forced prompts in ONE call)
    Pass@k     = 1 - C(n - c, k) / C(n, k)  with n = rollouts, for c = c_k (with) and #correct(WITHOUT_k)

and the same at ``random_positions`` uniformly drawn positions r != k of the same trajectory (with = c_r from
the prefix rollouts, without = forced alternatives at r), so that "forcing another token at the critical
token helps" can be told apart from "forcing another token anywhere helps". The paper's claim (abstract):
models "tend to produce positive outcomes when forced to decode other tokens instead of critical tokens".

Details and switches:

* pi for the alternatives is the *base* model's next-token distribution at the prefix, computed with
  transformers (``HFNextToken``: one teacher-forced forward over x + y, fp32 logits at the needed positions
  only), softmax at ``alt_temperature`` (1 = pi itself; the official script draws from the model's
  distribution). An alternative equal to EOS ends the response there (nothing is generated after it).
* The rollouts use the sampling temperature / top-p of step 1 (spec: "the sampling temperature of step 1");
  ``temperature`` overrides it.
* ``continuation_budget``: ``remaining`` (default) keeps every completed response within the sampling budget
  ``max_tokens`` (prefix + continuation), by sampling with ``max_tokens`` and cutting the continuation after
  ``max_tokens - len(prefix)`` tokens (cutting an autoregressive sample = sampling with the smaller budget;
  one SamplingSpec per call is what lets all prefixes share a call); ``full`` gives every continuation
  ``max_tokens`` new tokens (the official script's fixed ``max_tokens``).
* Positions run over the response tokens without a trailing EOS (the prefix ending at EOS is the finished,
  incorrect response). ``zero`` and ``recover`` are counts out of ``rollouts`` (official: 0 and 3 of 64).
* Scoring: each continuation is scored as the whole response, decode(y_<=i + continuation), with the
  recipe's reward functions and accuracy label (rl/evaluate.py), as the trajectories were.

The result is JSON: per trajectory the counts, the critical index and token, with/without correct counts and
Pass@k, the random positions; a summary with mean Pass@k over trajectories (critical: trajectories where a
critical token was found; random: every random position drawn). A diagnostic, not a training signal (§7.4).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from rl.credit.critical import critical_index, pass_at_k
from rl.evaluate import correctness, score_groups
from rl.fields import check_fields
from rl.fields import help_field as _h
from rollout.types import Completion, SamplingSpec

log = logging.getLogger(__name__)

@dataclass
class VerifyConfig:
    num_trajectories: int = _h(100, "incorrect trajectories verified: the first N pairs' rejected responses "
                                    "(official: the first 100)", ge=1)
    rollouts: int = _h(64, "continuations per prefix and forced alternatives per position (official 64)", ge=1)
    ks: list[int] = _h([1, 2, 4, 8, 16, 32, 64], "k of the reported Pass@k (k > rollouts is clamped to rollouts)",
                       ge=1, min_len=1)
    zero: int = _h(0, "a prefix with at most this many correct continuations is a critical candidate (official 0)",
                   ge=0)
    recover: int = _h(3, "a later prefix with more than this many correct continuations discards the candidate "
                         "(official 3 of 64); >= zero", ge=0)
    random_positions: int = _h(1, "random positions (!= the critical one) per trajectory forced for comparison", ge=0)
    alt_temperature: float = _h(1.0, "softmax temperature of pi(.|prefix) the forced alternatives are drawn from "
                                     "(1 = the model's distribution)", gt=0)
    temperature: float | None = _h(None, "rollout temperature; null = the sampling temperature of step 1 (spec)",
                                   ge=0)
    continuation_budget: Literal["remaining", "full"] = _h(
        "remaining", "remaining (prefix + continuation <= the sampling max_tokens) | full (each continuation gets "
        "max_tokens new tokens)")
    seed: int = _h(0, "seed of the rollouts, the alternatives and the random positions", ge=0)

    def check(self, prefix: str = "critical_tokens.verify") -> None:
        """The fields' declared valid values (rl/fields.py), then the relation between two of them."""
        check_fields(self, prefix)
        if self.zero > self.recover:
            raise ValueError(f"{prefix}.zero/recover: {self.zero} and {self.recover}: need zero <= recover")


@dataclass
class Trajectory:
    prompt_index: int  # PromptRow.index of its prompt (source row)
    prompt_ids: list[int]  # x, the ids it was sampled from
    response_ids: list[int]  # y without a trailing EOS
    pair_index: int = -1


# Next-token logits at x + y_<i for each requested position i: [len(positions), V], float32.
NextTokenLogits = Callable[[Sequence[int], Sequence[int], Sequence[int]], torch.Tensor]


class HFNextToken:
    """pi(.|x, y_<i) logits from a transformers causal LM: one teacher-forced forward over x + y_<max(i)."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def __call__(self, prompt_ids, response_ids, positions) -> torch.Tensor:
        from rl.standalone_model import output_head

        if not positions:
            return torch.empty(0)
        p = len(prompt_ids)
        ids = list(prompt_ids) + list(response_ids[: max(positions)])
        device = next(self.model.parameters()).device
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        h = base.get_decoder()(input_ids=torch.tensor([ids], device=device), use_cache=False).last_hidden_state[0]
        w, b = output_head(self.model)
        rows = h[torch.tensor([p + i - 1 for i in positions], device=device)]
        z = rows.to(w.dtype) @ w.T
        if b is not None:
            z = z + b
        return z.float()


def forced_alternatives(probs: torch.Tensor, original: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws (with replacement) from ``probs`` [V] with the original token's probability set to 0."""
    p = probs.detach().to(torch.float64).clone()
    p[original] = 0.0
    if not bool(torch.isfinite(p).all()) or float(p.sum()) <= 0.0:
        raise ValueError(f"forced_alternatives: no other token than {original} has probability > 0 at this prefix")
    return torch.multinomial(p, n, replacement=True, generator=generator)


def _cut(c: Completion, n: int, tokenizer=None) -> Completion:
    """The continuation cut after ``n`` tokens (finish_reason 'length'); unchanged when it is not longer."""
    if len(c.token_ids) <= n:
        return c
    ids = list(c.token_ids[: max(n, 0)])
    text = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else ""
    return replace(c, token_ids=ids, logprobs=c.logprobs[: len(ids)] if c.logprobs else c.logprobs, text=text,
                   finish_reason="length")


class _Verifier:
    def __init__(self, pool, scorer, prompt_set, next_token_logits, tokenizer, vc, sampling, label, threshold):
        self.pool, self.scorer, self.prompt_set = pool, scorer, prompt_set
        self.logits, self.tok, self.vc, self.label, self.threshold = next_token_logits, tokenizer, vc, label, threshold
        self.rows = {r.index: r for r in prompt_set.rows}
        self.max_tokens = sampling.max_tokens
        self.spec = SamplingSpec(n=vc.rollouts, temperature=sampling.temperature if vc.temperature is None
                                 else vc.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                 max_tokens=sampling.max_tokens, stop=list(sampling.stop), logprobs=False)

    def budget(self, prefix_len: int) -> int:
        """New tokens a continuation of a ``prefix_len``-token response prefix may keep."""
        if self.vc.continuation_budget == "full":
            return self.max_tokens
        return max(self.max_tokens - prefix_len, 0)

    def score(self, row, responses: list[tuple[list[int], Completion | None]]) -> list[bool]:
        """Correctness of each whole response = prefix ids + (cut) continuation; None = nothing generated."""
        groups = []
        for prefix, cont in responses:
            if cont is None:
                ids, fin = list(prefix), "stop"
            else:
                cont = _cut(cont, self.budget(len(prefix)))
                ids, fin = list(prefix) + list(cont.token_ids), cont.finish_reason
            groups.append([Completion(0, ids, None, self.tok.decode(ids, skip_special_tokens=True), fin)])
        result, _ = score_groups(self.scorer, self.prompt_set, [row] * len(groups), groups,
                                 {"step": 0, "total_steps": 0})
        return correctness(result, self.label, self.threshold)

    def stats(self, correct: int, n: int) -> dict:
        return {"n": n, "correct": correct,
                "pass_at_k": {str(k): pass_at_k(n, correct, k) for k in self.vc.ks}}

    def trajectory(self, j: int, t: Trajectory) -> dict:
        vc, x, y = self.vc, list(t.prompt_ids), list(t.response_ids)
        if t.prompt_index not in self.rows:
            raise ValueError(f"verify: trajectory {j} names prompt row {t.prompt_index}, which is not in the "
                             f"prompt set")
        row, n, length = self.rows[t.prompt_index], vc.rollouts, len(y)
        out = {"pair_index": t.pair_index, "prompt_index": t.prompt_index, "length": length,
               "response": self.tok.decode(y, skip_special_tokens=True), "counts": [], "critical_index": None,
               "critical_token_id": None, "critical_token": None, "with": None, "without": None, "random": []}
        if not length:
            return out
        groups = self.pool.generate([x + y[: i + 1] for i in range(length)], replace(self.spec, seed=vc.seed + 2 * j))
        counts = []
        for i, group in enumerate(groups):
            ok = self.score(row, [(y[: i + 1], c) for c in group])
            counts.append(int(sum(ok)))
        out["counts"] = counts
        k = critical_index(counts, vc.zero, vc.recover)
        if k is None:
            return out
        rng = random.Random(f"{vc.seed}:{j}")
        others = [i for i in range(length) if i != k]
        positions = [k] + sorted(rng.sample(others, min(vc.random_positions, len(others))))
        probs = torch.softmax(self.logits(x, y, positions).double() / vc.alt_temperature, -1)
        gen = torch.Generator().manual_seed(vc.seed * 1_000_003 + j)
        eos = self.tok.eos_token_id
        forced: list[tuple[int, list[int]]] = []  # (position, response prefix ending in the alternative)
        for r, pos in enumerate(positions):
            for a in forced_alternatives(probs[r], y[pos], n, gen).tolist():
                forced.append((pos, y[:pos] + [a]))
        to_generate = [i for i, (_, pre) in enumerate(forced) if pre[-1] != eos]
        conts: list[Completion | None] = [None] * len(forced)
        if to_generate:
            got = self.pool.generate([x + forced[i][1] for i in to_generate],
                                     replace(self.spec, n=1, seed=vc.seed + 2 * j + 1))
            for i, group in zip(to_generate, got):
                conts[i] = group[0]
        ok = self.score(row, [(pre, c) for (_, pre), c in zip(forced, conts)])
        without = {pos: 0 for pos in positions}
        for (pos, _), good in zip(forced, ok):
            without[pos] += int(good)
        out.update({"critical_index": k, "critical_token_id": y[k], "critical_token": self.tok.decode([y[k]]),
                    "critical_fraction": k / length, "with": self.stats(counts[k], n),
                    "without": self.stats(without[k], n)})
        out["without"]["alternatives"] = [self.tok.decode([pre[-1]]) for pos, pre in forced if pos == k][:8]
        for pos in positions[1:]:
            out["random"].append({"position": pos, "token_id": y[pos], "token": self.tok.decode([y[pos]]),
                                  "with": self.stats(counts[pos], n), "without": self.stats(without[pos], n)})
        return out


def _mean_pass(entries: list[dict], ks: Sequence[int]) -> dict[str, float]:
    if not entries:
        return {}
    return {str(k): sum(e["pass_at_k"][str(k)] for e in entries) / len(entries) for k in ks}


def verify_critical_tokens(pool, scorer, prompt_set, trajectories: Sequence[Trajectory],
                           next_token_logits: NextTokenLogits, tokenizer, vc: VerifyConfig, sampling: SamplingSpec,
                           accuracy_label: str, correct_threshold: float = 0.5) -> dict:
    """Run §3.3 on ``trajectories`` (module doc); returns the JSON-ready report."""
    vc.check()
    start = time.perf_counter()
    v = _Verifier(pool, scorer, prompt_set, next_token_logits, tokenizer, vc, sampling, accuracy_label,
                  correct_threshold)
    results = []
    for j, t in enumerate(trajectories):
        results.append(v.trajectory(j, t))
        r = results[-1]
        log.info("verify: trajectory %d/%d: %d tokens, critical index %s, pass@1 with %s without %s", j + 1,
                 len(trajectories), r["length"], r["critical_index"],
                 r["with"]["pass_at_k"].get("1") if r["with"] else "-",
                 r["without"]["pass_at_k"].get("1") if r["without"] else "-")
    found = [r for r in results if r["critical_index"] is not None]
    rand = [x for r in found for x in r["random"]]
    summary = {
        "trajectories": len(results), "found": len(found), "not_found": len(results) - len(found),
        "rollouts": vc.rollouts, "ks": list(vc.ks),
        "critical": {"with": _mean_pass([r["with"] for r in found], vc.ks),
                     "without": _mean_pass([r["without"] for r in found], vc.ks)},
        "random": {"with": _mean_pass([x["with"] for x in rand], vc.ks),
                   "without": _mean_pass([x["without"] for x in rand], vc.ks)},
        "random_positions": len(rand),
        "mean_critical_fraction": (sum(r["critical_fraction"] for r in found) / len(found)) if found else None,
        "seconds": time.perf_counter() - start,
    }
    return {"summary": summary, "trajectories": results}
