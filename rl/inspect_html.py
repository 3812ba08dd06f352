"""``tokencredit inspect``: an HTML page colouring each completion token by the credit it received.

Per token the colour shows the effective signed credit, advantage x weight (green
positive, red negative, intensity by size); tokens outside the loss (D3S dropped
rows/tokens, padding filters) are grey and struck through. Hovering a token shows
its advantage, weight, entropy and any per-token score a credit module stored
(``d3s_score``, ``thr_score``, ``tw_weight``).
"""

from __future__ import annotations

import html
from pathlib import Path

import torch


def _latest(folder: Path) -> Path:
    files = sorted(folder.glob("step_*.pt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no saved batches (run with logging.save_batches=true)")
    return files[-1]


def _token_text(tok: str) -> str:
    return tok.replace("Ġ", " ").replace("Ċ", "\u21b5\n")


def _colour(value: float, scale: float, kept: bool) -> str:
    if not kept:
        return "background:#e6e6e6;color:#999;text-decoration:line-through"
    a = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    rgb = "46,160,67" if value >= 0 else "215,58,73"
    return f"background:rgba({rgb},{0.1 + 0.8 * a:.2f})"


def write_inspect_page(run_dir: Path, step: int | None = None, out: str | None = None, max_rows: int = 32) -> Path:
    folder = run_dir / "batches"
    path = folder / f"step_{step:06d}.pt" if step is not None else _latest(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved batch for step {step}")
    b = torch.load(path, weights_only=True)  # tensors, strings and numbers only (rl/inspect_dump.py)
    credit = (b["advantages"] * b["token_weight"] * b["token_mask"]).float()
    scale = float(credit.abs().max()) or 1.0
    kept_tokens = int(b["token_mask"].sum())
    total_tokens = int(b["completion_mask"].sum())
    parts = [
        "<!doctype html><meta charset='utf-8'><title>tokencredit inspect</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        ".row{border-top:1px solid #ddd;padding:.6em 0}.meta{color:#555;font-size:.85em}"
        ".tok{font-family:ui-monospace,monospace;white-space:pre-wrap;border-radius:3px;padding:0 1px}"
        ".prompt{color:#444;font-size:.85em;white-space:pre-wrap}</style>",
        f"<h1>{html.escape(run_dir.name)} &mdash; step {b['step']}</h1>",
        f"<p>{len(b['tokens'])} completions; {kept_tokens} of {total_tokens} tokens enter the loss "
        f"({100 * kept_tokens / max(total_tokens, 1):.1f}%). Colour = advantage &times; weight "
        "(green &gt; 0, red &lt; 0); grey struck-through = not in the loss. Hover a token for its numbers.</p>",
    ]
    extras = b.get("extras", {})
    last_group = None
    for i, toks in enumerate(b["tokens"][:max_rows]):
        gid = int(b["group_id"][i])
        if gid != last_group:
            parts.append(f"<h3>group {gid}</h3><div class='prompt'>{html.escape(b['prompts'][i][-300:])}</div>")
            last_group = gid
        parts.append(f"<div class='row'><div class='meta'>row {i} &middot; reward {float(b['rewards'][i]):.3f} "
                     f"&middot; advantage {float(b['advantages'][i, 0]):+.3f}</div>")
        for t, tok in enumerate(toks):
            kept = bool(b["token_mask"][i, t] > 0)
            tip = [f"A={float(b['advantages'][i, t]):+.3f}", f"w={float(b['token_weight'][i, t]):.3f}"]
            if b.get("entropy") is not None:
                tip.append(f"H={float(b['entropy'][i, t]):.3f}")
            tip += [f"{k}={float(v[i, t]):.4g}" for k, v in extras.items() if v.dim() == 2 and v.shape[0] > i]
            parts.append(f"<span class='tok' style='{_colour(float(credit[i, t]), scale, kept)}' "
                         f"title='{html.escape(' '.join(tip))}'>{html.escape(_token_text(tok))}</span>")
        parts.append("</div>")
    target = Path(out) if out else run_dir / f"inspect_step_{b['step']:06d}.html"
    target.write_text("".join(parts))
    return target
