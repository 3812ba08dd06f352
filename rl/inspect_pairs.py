"""``tokencredit inspect-pairs``: an HTML page of preference pairs with two per-token signals next to the text.

* r->Q* implicit reward (Rafailov et al., "From r to Q*: Your Language Model is Secretly a Q-Function",
  arXiv 2404.12358; specs/dpo_methods.md §2): a DPO-trained policy pi and its reference pi_ref define

      r_hat_t = beta * (log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t))

  (Q* - V* up to the potential V*(s_t) - V*(s_{t+1}); summed over a response it is DPO's implicit reward
  beta * log pi(y|x)/pi_ref(y|x)). Teacher-forced, one forward of each model per batch, log-probs in fp32
  from the last hidden states in token chunks (rl/algorithms/logprobs.py; no [N, T, V] tensor). Use the beta
  the policy was trained with. A LoRA adapter folder as policy: pi_ref = its base with the adapters
  disabled (spec §6.9) unless ``ref`` names another model.
* cDPO p_CE (arXiv 2411.19943, §3): the per-token contrastive-estimation scores stored in the weight columns
  of a ``tokencredit critical-tokens`` dataset (``chosen_weight`` / ``rejected_weight``); low = critical.

Tokens are the ``load_pairs`` response tokens (EOS included): the offsets the scores are stored at. Colours
reuse rl/inspect_html.py: r_hat green (> 0) / red (< 0) by size relative to the page's largest |r_hat|;
p_CE red by 1 - p_CE (the weight cDPO gives a rejected token). Hovering a token shows its numbers.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import torch

from rl.inspect_html import _colour, _token_text
from rl.standalone_model import output_head, response_hidden, torch_device

log = logging.getLogger(__name__)


class AdapterOff:
    """The reference of a LoRA policy: the same PeftModel, run with its adapters disabled."""

    def __init__(self, peft_model):
        self.model = peft_model


def _is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _tokenizer_of(policy: str | None) -> str | None:
    if not policy:
        return None
    if (Path(policy) / "tokenizer_config.json").is_file():
        return policy
    if _is_adapter(policy):
        return json.loads((Path(policy) / "adapter_config.json").read_text())["base_model_name_or_path"]
    return None


def load_policy_and_ref(policy: str, ref: str | None, device: str = "auto"):
    """(pi, pi_ref), fp32, eval mode. ``policy``: an HF folder or a peft adapter folder."""
    from transformers import AutoModelForCausalLM

    from rl.models import resolve_model

    dev = torch_device(device)

    def load(p):
        return AutoModelForCausalLM.from_pretrained(resolve_model(p), dtype=torch.float32).to(dev).eval()

    if _is_adapter(policy):
        from peft import PeftModel

        base_path = json.loads((Path(policy) / "adapter_config.json").read_text())["base_model_name_or_path"]
        pi = PeftModel.from_pretrained(load(base_path), policy).to(dev).eval()
        return pi, (load(ref) if ref else AdapterOff(pi))
    if not ref:
        raise ValueError(f"{policy} is a full model folder: name its reference model (--ref, e.g. the base the "
                         f"policy was trained from)")
    return load(policy), load(ref)


@torch.no_grad()
def response_logprobs(model, batch: dict, chunk_tokens: int = 1024) -> torch.Tensor:
    """log pi(y_t | x, y_<t) [N, T] in float32 on the completion tokens of a ``collate_pairs`` batch, 0 on padding."""
    from rl.algorithms.logprobs import chunked_logprobs

    ctx, m = (model.model.disable_adapter(), model.model) if isinstance(model, AdapterOff) else (None, model)
    if ctx is not None:
        with ctx:
            return response_logprobs(m, batch, chunk_tokens)
    mask = batch["completion_mask"] > 0
    h = response_hidden(m, batch)
    w, b = output_head(m)
    sel = mask.to(h.device)
    logp, _ = chunked_logprobs(h[sel][None], w, batch["completion_ids"].to(h.device)[sel][None], bias=b,
                               chunk_tokens=chunk_tokens)
    out = torch.zeros(mask.shape, dtype=torch.float32)
    out[mask] = logp[0].float().cpu()
    return out


def implicit_token_rewards(policy, ref, rows, pad_id: int, beta: float, batch_pairs: int = 8,
                           chunk_tokens: int = 1024) -> list[tuple[list[float], list[float]]]:
    """r_hat_t = beta (log pi - log pi_ref) of every response token of each pair: [(chosen, rejected)]."""
    from rl.preference_data import collate_pairs

    out = []
    for s in range(0, len(rows), batch_pairs):
        part = rows[s: s + batch_pairs]
        batch = collate_pairs(part, pad_id)
        r = beta * (response_logprobs(policy, batch, chunk_tokens).double()
                    - response_logprobs(ref, batch, chunk_tokens).double())
        b = len(part)
        out += [([float(x) for x in r[i, : len(row.chosen_ids)]], [float(x) for x in r[b + i, : len(row.rejected_ids)]])
                for i, row in enumerate(part)]
    return out


_STYLE = ("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
          ".pair{border-top:2px solid #bbb;padding:.6em 0}.meta{color:#555;font-size:.85em;margin-top:.4em}"
          ".tok{font-family:ui-monospace,monospace;white-space:pre-wrap;border-radius:3px;padding:0 1px}"
          ".prompt{color:#444;font-size:.85em;white-space:pre-wrap}.lab{display:inline-block;width:4.5em;"
          "color:#777;font-size:.8em}</style>")


def _first_row(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return json.loads(line)
    return {}


def _resolve_source(pairs: str | Path) -> tuple[Path, dict]:
    """A jsonl, or a critical-tokens output folder (its weighted_pairs.jsonl and run.json)."""
    p = Path(pairs)
    if p.is_dir():
        run = json.loads((p / "run.json").read_text()) if (p / "run.json").is_file() else {}
        src = p / "weighted_pairs.jsonl" if (p / "weighted_pairs.jsonl").is_file() else p / "pairs.jsonl"
        return src, run
    return p, {}


def write_pairs_page(pairs: str | Path, out: str | Path | None = None, *, policy: str | None = None,
                     ref: str | None = None, tokenizer: str | None = None, beta: float = 0.1, max_rows: int = 32,
                     chosen_weight_field: str = "chosen_weight", rejected_weight_field: str = "rejected_weight",
                     max_length: int = 1024, max_prompt_length: int = 512, batch_pairs: int = 8,
                     chunk_tokens: int = 1024, device: str = "auto") -> Path:
    """The page for the first ``max_rows`` pairs of ``pairs``; r_hat with ``policy``, p_CE where the weight
    columns exist. Returns its path."""
    from transformers import AutoTokenizer

    from rl.models import resolve_model
    from rl.preference_data import PreferenceDataConfig, load_pairs

    src, run = _resolve_source(pairs)
    first = _first_row(src)
    cw = chosen_weight_field if chosen_weight_field in first else ""
    rw = rejected_weight_field if rejected_weight_field in first else ""
    if not policy and not (cw or rw):
        raise ValueError(f"{src}: nothing to show: no weight columns ({chosen_weight_field!r}, "
                         f"{rejected_weight_field!r}) and no --policy for r_hat")
    if not ref and not (policy and _is_adapter(policy)):  # an adapter's reference is its base, adapters off
        ref = run.get("model_path")
    tok_path = tokenizer or _tokenizer_of(policy) or ref or run.get("model_path")
    if not tok_path:
        raise ValueError("name the tokenizer the pairs were scored with (--tokenizer)")
    tok = AutoTokenizer.from_pretrained(resolve_model(tok_path))
    ps = load_pairs(PreferenceDataConfig(source=str(src), chosen_weight_field=cw, rejected_weight_field=rw,
                                         max_length=max_length, max_prompt_length=max_prompt_length,
                                         on_bad_pair="error"), tok, limit=max_rows)
    rewards = None
    if policy:
        pi, pi_ref = load_policy_and_ref(policy, ref, device)
        rewards = implicit_token_rewards(pi, pi_ref, ps.rows, ps.pad_token_id, beta, batch_pairs, chunk_tokens)
    scale = max((abs(x) for c, r in rewards for x in c + r), default=0.0) if rewards else 0.0
    scale = scale or 1.0
    parts = ["<!doctype html><meta charset='utf-8'><title>tokencredit inspect-pairs</title>", _STYLE, "<body>",
             f"<h1>{html.escape(src.name)}</h1><p>{len(ps)} pairs."]
    if rewards:
        parts.append(f" <span class='lab'>r&#770;</span> = &beta;&middot;log(&pi;/&pi;<sub>ref</sub>) per token "
                     f"(r&rarr;Q*, arXiv 2404.12358), &beta;={beta:g}, &pi;={html.escape(str(policy))}, "
                     f"&pi;<sub>ref</sub>={html.escape(str(ref or 'adapters off'))}: green &gt; 0, red &lt; 0, "
                     f"full colour at |r&#770;|={scale:.3g}.")
    if cw or rw:
        parts.append(" <span class='lab'>cDPO</span> contrastive score per token (arXiv 2411.19943): red by "
                     "1 &minus; score (low = critical token; cDPO weighs a rejected token by 1 &minus; score).")
    parts.append(" Hover a token for its numbers.</p>")
    for i, row in enumerate(ps.rows):
        parts.append(f"<div class='pair'><div class='meta'>pair {i} (source row {row.index})</div>"
                     f"<div class='prompt'>{html.escape(row.prompt[-300:])}</div>")
        sums = {}
        for side in ("chosen", "rejected"):
            ids = getattr(row, f"{side}_ids")
            toks = tok.convert_ids_to_tokens(ids)
            rhat = rewards[i][side == "rejected"] if rewards else None
            pce = getattr(row, f"{side}_weight") if (cw if side == "chosen" else rw) else None
            meta = [side, f"{len(ids)} tokens"]
            if rhat is not None:
                sums[side] = sum(rhat)
                meta.append(f"&Sigma; r&#770; = {sums[side]:+.4f}")
            if pce is not None:
                j = min(range(len(pce)), key=pce.__getitem__)
                meta.append(f"mean score {sum(pce) / len(pce):.3f}, lowest {pce[j]:.3g} at token {j} "
                            f"{html.escape(repr(_token_text(toks[j])))}")
            parts.append(f"<div class='meta'>{' &middot; '.join(meta)}</div>")
            for kind, values in (("r&#770;", rhat), ("p_CE", pce)):
                if values is None:
                    continue
                parts.append(f"<div><span class='lab'>{kind}</span>")
                for t, text in enumerate(toks):
                    tip = [f"t={t}"]
                    if rhat is not None:
                        tip.append(f"r_hat={rhat[t]:+.4g}")
                    if pce is not None:
                        tip.append(f"p_CE={pce[t]:.4g}")
                    style = _colour(rhat[t], scale, True) if kind != "p_CE" else _colour(pce[t] - 1.0, 1.0, True)
                    parts.append(f"<span class='tok' style='{style}' title='{html.escape(' '.join(tip))}'>"
                                 f"{html.escape(_token_text(text))}</span>")
                parts.append("</div>")
        if len(sums) == 2:
            margin = sums["chosen"] - sums["rejected"]
            parts.append(f"<div class='meta'>implicit reward margin chosen &minus; rejected: {margin:+.4f} "
                         f"({'ranked right' if margin > 0 else 'ranked wrong'})</div>")
        parts.append("</div>")
    parts.append("</body>")
    target = Path(out) if out else src.with_name(src.stem + ".inspect.html")
    target.write_text("".join(parts), encoding="utf-8")
    return target


def cli_main(args) -> int:
    """``tokencredit inspect-pairs`` (wired in rl/cli.py)."""
    out = write_pairs_page(args.pairs, args.out, policy=args.policy, ref=args.ref, tokenizer=args.tokenizer,
                           beta=args.beta, max_rows=args.rows, chosen_weight_field=args.chosen_weight_field,
                           rejected_weight_field=args.rejected_weight_field, max_length=args.max_length,
                           max_prompt_length=args.max_prompt_length)
    log.info("wrote %s (open it in a browser)", out)
    return 0

