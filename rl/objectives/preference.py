"""The DPO-family objective: per-token preference losses over whole pairs (``unit = "pair"``).

Losses (rl/algorithms/preference.py, ``PREFERENCE_LOSSES[preference.loss]``), all on one token-weighted kernel
(specs/dpo_methods.md §0): with Delta_t = log pi_theta(y_t|s_t) - log pi_ref(y_t|s_t) and constant weights w,

    S(y) = sum_t w_t Delta_t,    h = S(y^w) - S(y^l),    L = -log s(beta h)            (DPO, arXiv 2305.18290)

IPO (2310.12036), TDPO1/2 (2404.11999), TGDPO (2506.14574), cDPO (2411.19943) and T-REG (2412.02685) change
z or w as documented there. This module decides what each one needs from the models and how pairs travel.

Row layout (what the driver sends, ``train_batch``): pairs are **interleaved**, row 2i = pair i's chosen
response, row 2i+1 = its rejected one, so any contiguous even slice holds whole pairs: ranks get whole
pairs (rl/trainer_group.py ``shard_pairs``) and micro-batches split by pairs (``rows_per_unit = 2``). The
loss reorders a micro-batch to the losses' [chosen; rejected] layout (``blocked_order``).

Statistics (no grad, on the rank, ``stat_requests``), all at temperature 1 and at the batch's completion
tokens, i.e. aligned by response-token offset:

* every loss: ``ref_logp`` = log pi_ref(y_t) (the frozen copy, or the LoRA base with adapters off), unless the
  batch already carries it (``dpo.reference_logp=precompute``: computed once per pair, stored per response
  token and scattered back into each batch's layout by ``RefLogpStore``);
* tgdpo: ``guidance_logp`` = log pi_hat(y_t) from the frozen ``guidance`` model (``dpo.guidance_model``);
* tdpo1/tdpo2: ``ref_hidden`` (the reference's last hidden states); the loss streams
  KL_t(pi_ref || pi_theta) over the full vocabulary from both hidden states and both output heads
  (rl/algorithms/token_kl.py), with the policy head from the engine (``loss_heads``; gathered under ZeRO-3);
* treg: pi_eval's log-probs of the same response tokens after the ``better`` and ``worse`` revision prompts
  (``preference.treg_*_template``, built by ``PairBatcher`` from the pair's prompt tokens), turned into
  r_hat_t = s(better - worse) - 0.5 (rl/credit/treg.py); pi_eval = ``preference.treg_evaluator``: the frozen
  reference (default, spec Q7) or the current policy (no grad, recomputed every step);
* cdpo: p_CE is the pair data's per-token weight column (``preference_data.rejected_weight_field``; 1 where
  a side has no column), EOS located from the token ids (``eos_mask``).
Any other loss multiplies its weights by the data's weight columns when they are set (``x.weight``).

Normaliser: the global number of pairs of the optimizer step (summed over ranks), so the update is the mean
per-pair loss however pairs fall on ranks and micro-batches. A padding copy (a rank or micro-batch without
pairs, ``loss_mask`` all 0) adds exactly 0. Metrics (``train/reward_accuracy``, ``reward_margin``,
``reward_chosen``/``rejected``, ...) are per-pair means weighted by each micro-batch's pair count, so the
driver's reduction over ranks is the mean over every pair of the step; token counts are reported per pair.
"""

from __future__ import annotations

import torch

from rl.algorithms.registry import PREFERENCE_LOSSES
from rl.objectives.base import Objective, Stat

TDPO = ("tdpo1", "tdpo2")
COUNT_METRICS = ("tgdpo_negative_weights", "tgdpo_clamped")  # token counts: logged per pair


# ---------------------------------------------------------------------------------------- row layout
def interleave(x: torch.Tensor) -> torch.Tensor:
    """[2B, ...] chosen-then-rejected (PairSet.collate) -> [2B, ...] with row 2i chosen, 2i+1 rejected of pair i."""
    b = x.shape[0] // 2
    return torch.stack([x[:b], x[b:]], 1).reshape(x.shape)


def blocked_order(n: int, device=None) -> torch.Tensor:
    """Row indices taking an interleaved [2B] batch to the losses' [chosen; rejected] layout."""
    return torch.cat([torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device)])


def pair_rows(pairs: torch.Tensor) -> torch.Tensor:
    """Pair indices -> their rows in the interleaved layout (chosen, rejected, chosen, ...)."""
    return torch.stack([2 * pairs, 2 * pairs + 1], 1).reshape(-1)


def valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: pairs with loss tokens on both sides (a padding copy has none)."""
    tokens = mask.reshape(-1, 2, mask.shape[-1]).sum(-1)
    return (tokens > 0).all(-1)


def eos_positions(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[N, T] float: 1 at each row's last token when it is EOS (a truncated row has none)."""
    lengths = completion_mask.sum(-1).long()
    last = (lengths - 1).clamp(min=0)
    out = torch.zeros_like(completion_mask, dtype=torch.float32)
    is_eos = (lengths > 0) & (completion_ids.gather(1, last[:, None])[:, 0] == eos_id)
    out[torch.arange(out.shape[0])[is_eos], last[is_eos]] = 1.0
    return out


class PairBatcher:
    """Driver side: collated pairs (rl/preference_data.py ``collate_pairs``) -> the rows a rank receives.

    Adds ``loss_mask`` (= completion_mask), ``eos_mask`` (cdpo), the T-REG prompts and precomputed reference
    log-probs, and interleaves every row tensor. T-REG's prompts are spliced at the token level: BOS (if the
    prompt starts with it) + template text before ``{prompt}`` + the pair's prompt tokens + text after, so the
    response tokens and the pair's own prompt tokens are exactly the ones trained on.
    """

    ROW_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "weight")

    def __init__(self, tokenizer, pcfg) -> None:
        self.pcfg = pcfg
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos, self.bos = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.treg = {}
        if pcfg.loss == "treg":
            for name, template in (("better", pcfg.treg_better_template), ("worse", pcfg.treg_worse_template)):
                before, after = template.split("{prompt}")
                enc = [tokenizer(t, add_special_tokens=False)["input_ids"] if t else [] for t in (before, after)]
                self.treg[name] = (list(enc[0]), list(enc[1]))

    def __call__(self, collated: dict, ref_logp: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from rl.experience import left_pad

        out = {k: collated[k] for k in self.ROW_KEYS if k in collated}
        out["completion_mask"] = out["completion_mask"].float()
        out["loss_mask"] = out["completion_mask"].clone()
        if self.pcfg.loss == "cdpo":
            out["eos_mask"] = eos_positions(out["completion_ids"], out["completion_mask"], self.eos)
        if ref_logp is not None:
            out["ref_logp"] = ref_logp[:, : out["completion_ids"].shape[1]]
        prompts = [ids[m.bool()].tolist() for ids, m in zip(collated["prompt_ids"], collated["prompt_mask"])]
        for name, (before, after) in self.treg.items():
            spliced = []
            for p in prompts:
                head = [p[0]] if p and self.bos is not None and p[0] == self.bos else []
                spliced.append(head + before + p[len(head):] + after)
            out[f"{name}_ids"], out[f"{name}_mask"] = left_pad(spliced, self.pad)
        return {k: interleave(v) for k, v in out.items()}


class RefLogpStore:
    """``dpo.reference_logp=precompute``: log pi_ref per response token of every pair, computed once.

    Keyed by the pair's position in its PairSet; values are the chosen and rejected responses' per-token
    log-probs (one per response token, EOS included), so any batch layout (padding width, order) gets
    them back by response-token offset."""

    def __init__(self) -> None:
        self.values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, positions: list[int], ref_logp: torch.Tensor, completion_mask: torch.Tensor) -> None:
        """``ref_logp`` / ``completion_mask`` in the collated [chosen; rejected] layout of ``positions``."""
        b = len(positions)
        for i, pos in enumerate(positions):
            c, r = completion_mask[i].bool(), completion_mask[b + i].bool()
            self.values[pos] = (ref_logp[i][c].clone(), ref_logp[b + i][r].clone())

    def batch(self, positions: list[int], width: int) -> torch.Tensor:
        """[2B, width] in the collated [chosen; rejected] layout, 0 on padding. (Recomputed, not saved, on a
        resume: the reference is frozen, so the values are the same.)"""
        rows = [self.values[p][0] for p in positions] + [self.values[p][1] for p in positions]
        out = torch.zeros(len(rows), width)
        for i, v in enumerate(rows):
            out[i, : v.numel()] = v
        return out


# ---------------------------------------------------------------------------------------- the objective
class PreferenceObjective(Objective):
    unit = "pair"
    mask_key = "loss_mask"
    prefix = "train"
    temperature = 1.0  # log-probs of the data's tokens, not of a sampling distribution (TRL: no temperature)
    rows_per_unit = 2

    def __init__(self, pcfg) -> None:
        import rl.algorithms.preference  # noqa: F401 - registers the losses (registries are per process)

        self.cfg = pcfg
        self.name = pcfg.loss
        self.loss_fn = PREFERENCE_LOSSES[pcfg.loss]
        self.loss_heads = ("reference",) if pcfg.loss in TDPO else ()

    def frozen_models(self, guidance_path: str | None) -> dict[str, str]:
        """Frozen models besides the reference that the loss needs: {role: path}."""
        if self.name == "tgdpo":
            if not guidance_path:
                raise ValueError("preference.loss=tgdpo needs dpo.guidance_model")
            return {"guidance": guidance_path}
        return {}

    def stat_requests(self, batch: dict) -> list[Stat]:
        req = [] if "ref_logp" in batch else [Stat("ref_logp", "reference", "logp", temperature=1.0)]
        if self.name == "tgdpo":
            req.append(Stat("guidance_logp", "guidance", "logp", temperature=1.0))
        if self.name in TDPO:
            req.append(Stat("ref_hidden", "reference", "hidden"))
        if self.name == "treg":  # pi_eval: the frozen reference (spec Q7) or the current policy
            ev = self.cfg.treg_evaluator
            req += [Stat("better_logp", ev, "logp", temperature=1.0, prompt="better"),
                    Stat("worse_logp", ev, "logp", temperature=1.0, prompt="worse")]
        return req

    def prepare(self, engine, batch: dict) -> None:
        """The no-grad statistics of this rank's pairs, added to ``batch`` in place (kept on the rank)."""
        from rl.credit.treg import treg_token_reward

        req = self.stat_requests(batch)
        if req:
            batch.update(engine.stats(batch, req))
        if self.name == "treg":
            batch["token_reward"] = treg_token_reward(batch.pop("better_logp"), batch.pop("worse_logp"),
                                                      batch["completion_mask"].float())

    def norm_counts(self, batch: dict) -> list[float]:
        return [float(valid_pairs(batch[self.mask_key]).sum())]

    def inputs(self, logp: torch.Tensor, mb: dict, order: torch.Tensor, ref_kl: torch.Tensor | None = None):
        from rl.algorithms.preference import PreferenceInputs

        dev = logp.device

        def get(key):
            v = mb.get(key)
            return None if v is None else v.to(dev)[order]

        weight = get("weight")
        cdpo = self.name == "cdpo"
        return PreferenceInputs(
            policy_logp=logp[order], ref_logp=get("ref_logp"), mask=get(self.mask_key),
            weight=None if cdpo else weight, guidance_logp=get("guidance_logp"),
            token_reward=get("token_reward"), ce_prob=weight if cdpo else None,
            ref_kl=None if ref_kl is None else ref_kl[order], eos_mask=get("eos_mask"))

    def _ref_kl(self, out: dict, mb: dict, mask: torch.Tensor) -> torch.Tensor:
        """TDPO: KL_t(pi_ref || pi_theta) at every loss token [n, T] (0 elsewhere), with grad to the policy."""
        from rl.algorithms.token_kl import chunked_reference_kl

        m = mask > 0
        (w_pol, b_pol), (w_ref, b_ref) = out["heads"]["policy"], out["heads"]["reference"]
        h_ref = mb["ref_hidden"].to(out["hidden"].device)
        kl = chunked_reference_kl(out["hidden"][m], w_pol, h_ref[m], w_ref, bias_policy=b_pol, bias_ref=b_ref,
                                  temperature=1.0, chunk_tokens=self.cfg.chunk_tokens)
        return torch.zeros(mask.shape, dtype=kl.dtype, device=kl.device).masked_scatter(m, kl)

    def loss(self, out: dict, mb: dict, norm: list[float]) -> tuple[torch.Tensor, dict, float]:
        logp = out["logp"]
        mask = mb[self.mask_key].to(logp.device)
        order = blocked_order(mask.shape[0], logp.device)
        ref_kl = self._ref_kl(out, mb, mask) if self.name in TDPO else None
        per_pair, metrics = self.loss_fn(self.inputs(logp, mb, order, ref_kl), self.cfg)
        valid = valid_pairs(mask)
        share = torch.where(valid, per_pair, torch.zeros_like(per_pair)).sum() / max(norm[0], 1.0)
        pairs = float(valid.sum())
        values = {}
        for k, v in metrics.items():
            if k == "pairs":
                continue
            v = float(v)
            if k in COUNT_METRICS:
                k, v = f"{k}_per_pair", v / max(per_pair.shape[0], 1)
            values[f"{self.prefix}/{k}"] = v
        return share, values, pairs

    # ------------------------------------------------------------------ held-out pairs
    @torch.no_grad()
    def evaluate(self, engine, batch: dict) -> tuple[dict[str, float], float]:
        """Implicit-reward metrics of held-out pairs under the current policy: (values, pair count).

        The reward of a response is beta * sum_t Delta_t (unweighted, as every method logs it); the loss
        reported is plain DPO's (``eval/dpo_loss``), comparable across methods."""
        req = [Stat("policy_logp", "policy", "logp", temperature=1.0)]
        if "ref_logp" not in batch:
            req.append(Stat("ref_logp", "reference", "logp", temperature=1.0))
        st = engine.stats(batch, req)
        mask = batch[self.mask_key]
        order = blocked_order(mask.shape[0], mask.device)
        from rl.algorithms.preference import PreferenceInputs

        ref = batch["ref_logp"] if "ref_logp" in batch else st["ref_logp"]
        x = PreferenceInputs(st["policy_logp"][order], ref[order], mask[order])
        per_pair, metrics = PREFERENCE_LOSSES["dpo"](x, self.cfg)
        valid = valid_pairs(mask)
        pairs = float(valid.sum())
        if not pairs:
            return {}, 0.0
        values = {f"eval/{k}": float(v) for k, v in metrics.items() if k != "pairs"}
        values["eval/dpo_loss"] = float(per_pair[valid].mean())
        return values, pairs
