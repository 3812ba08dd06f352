"""Token-level credit assignment modules (D3S, THR, TW-GRPO, RMT) that plug in between advantages and the loss."""


def load_all() -> None:
    import importlib

    for mod in ("d3s", "thr", "tw"):
        importlib.import_module(f"rl.credit.{mod}")
