"""benchmarks/credit_ablation.py's table (stdout) and figure (accuracy against steps and trainer
seconds, pass@k, tokens in backward and trainer seconds per arm)."""

from __future__ import annotations

from pathlib import Path


def fmt(s: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "-"
    scale = 100 if pct else 1
    d = 0 if pct else digits
    sd = "" if s.get("sd") is None else f"±{s['sd'] * scale:.{d}f}"
    return f"{s['mean'] * scale:.{d}f}{sd}"


def print_table(result: dict) -> None:
    k = result["final_k"]
    S = result["steps"]
    print(f"\ncredit ablation: {result['task']}; {S} steps (D3S {result['d3s_steps']}, schedule over {S}); seeds "
          f"{result['seeds']}; mean ± SD over seeds at step {S}; load = mean 1-min load average during training")
    head = (f"{'arm':<12} {'n':>2} {'greedy':>12} {'pass@' + str(k):>12} {'tokens bw %':>12} {'trainer s':>12} "
            f"{'x GRPO':>6} {'AUC steps':>12} {'greedy@GRPO s':>14} {'load':>9}")
    print(head)
    print("-" * len(head))
    for name, a in result["arms"].items():
        ratio = a.get("trainer_time_ratio_to_grpo")
        vs = a.get("vs_grpo", {})
        print(f"{name:<12} {a['greedy']['n']:>2} {fmt(a['greedy']):>12} {fmt(a['pass_at_k']):>12} "
              f"{fmt(a['tokens_in_backward_frac'], pct=True):>12} {fmt(a['trainer_s'], digits=0):>12} "
              f"{'-' if ratio is None else f'{ratio:.2f}':>6} {fmt(a['auc_steps']):>12} "
              f"{fmt(vs.get('greedy_at_grpo_trainer_s')):>14} {fmt(a['load_mean'], digits=1):>9}")
        if "end" in a:
            e = a["end"]
            print(f"{'  (end)':<12} {'':>2} {fmt(e['greedy']):>12} {fmt(e['pass_at_k']):>12} {'':>12} "
                  f"{fmt(e['trainer_s'], digits=0):>12}   at step {e['steps'][0] if e['steps'] else '-'}; "
                  f"reached GRPO's greedy in {vs.get('reached', '-')}/{vs.get('runs', '-')} seeds after "
                  f"{fmt(vs.get('trainer_s_to_grpo_greedy'), digits=0)} trainer s (GRPO: "
                  f"{fmt(a.get('grpo_trainer_s_ref'), digits=0)} s)")
    tc = result.get("task_check")
    if tc:
        print(f"\ntask check: base greedy {tc['base_greedy']:.3f} -> GRPO {tc['grpo_greedy_at_S']:.3f} at step {S}: "
              f"{'learns' if tc['learns'] else 'DOES NOT LEARN measurably'}, "
              f"{'headroom left' if tc['headroom_left'] else 'SATURATED (> 0.85)'} ({tc['rule']})")
    print(f"\nclaims ({result['verdict_rule']})")
    for c in result["claims"]:
        print(f"* {c['paper']}: {c['claim']}\n  -> {c['verdict'].upper()}")
        for p in c["checks"]:
            diff = p.get("diff")
            what = (f"arm {fmt(p['arm'])} vs GRPO {fmt(p['grpo'])}, diff {diff:+.3f}, threshold "
                    f"{p.get('threshold') if p.get('threshold') is not None else '-'}" if "grpo" in p and diff is not None
                    else f"arm {fmt(p['arm'])} (95% CI {p['arm'].get('ci95')}) vs bound {p.get('bound')}" if "bound" in p
                    else f"arm {fmt(p['arm'])}, reached {p.get('reached', '-')}/{p.get('runs', '-')}")
            print(f"    {p['check']}: {what}: {p['verdict']}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (ax_step, ax_time), (ax_pass, ax_bar) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, a) in enumerate(arms.items()):
        c = colors[i % len(colors)]
        for ax, key in ((ax_step, "band_step"), (ax_time, "band_trainer_s")):
            b = a[key]
            if not b["x"]:
                continue
            lo = [m - s for m, s in zip(b["mean"], b["sd"])]
            hi = [m + s for m, s in zip(b["mean"], b["sd"])]
            ax.plot(b["x"], b["mean"], color=c, label=f"{name} (n={a['greedy']['n']})",
                    marker="o" if key == "band_step" else None, ms=3)
            ax.fill_between(b["x"], lo, hi, color=c, alpha=0.15)
        runs = result["runs"].get(name, [])
        for r in runs:
            pts = [p for p in r["curve"] if p.get("pass_at_k") is not None and p.get("k") == result["final_k"]]
            ax_pass.plot([p["step"] for p in pts], [p["pass_at_k"] for p in pts], color=c, marker="o", alpha=0.6,
                         label=name if r is runs[0] else None)
    S = result["steps"]
    ax_step.axvline(S, color="gray", ls=":", lw=1)
    ax_step.set(xlabel="step", ylabel="held-out greedy accuracy",
                title=f"greedy vs step (mean ± SD over seeds; D3S runs on past step {S})")
    ax_time.set(xlabel="trainer seconds (old-policy pass + credit + update)", ylabel="held-out greedy accuracy",
                title="greedy vs trainer time (mean ± SD, interpolated between evaluations)")
    ax_pass.set(xlabel="step", ylabel=f"held-out pass@{result['final_k']}",
                title=f"pass@{result['final_k']} (step 0, step {S}, D3S's last step; one point per seed)")
    names = list(arms)
    fr = [arms[n]["tokens_in_backward_frac"] for n in names]
    ts = [arms[n]["trainer_s"] for n in names]
    x = list(range(len(names)))
    ax_bar.bar([i - 0.2 for i in x], [100 * (f["mean"] or 0) for f in fr], 0.4,
               yerr=[100 * (f["sd"] or 0) for f in fr], color="tab:gray", label="% tokens in backward")
    ax_bar.set_ylabel("% of completion tokens in the loss (S steps)")
    ax2 = ax_bar.twinx()
    ax2.bar([i + 0.2 for i in x], [t["mean"] or 0 for t in ts], 0.4, yerr=[t["sd"] or 0 for t in ts],
            color="tab:blue", alpha=0.6, label="trainer seconds")
    ax2.set_ylabel(f"trainer seconds over {S} steps")
    ax_bar.set_xticks(x, names)
    ax_bar.set_title("tokens in backward (gray) and trainer seconds (blue), mean ± SD")
    for ax in (ax_step, ax_time, ax_pass):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"credit ablation: {result['task']}, seeds {result['seeds']}\n{result['machine']}; 1-min load "
                 f"average during training {result['load_range']}; {result['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
