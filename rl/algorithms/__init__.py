"""GRPO-family pieces: advantage estimators, policy losses, aggregation, KL (pure tensor functions)."""


def load_all() -> None:
    """Import every module that registers pieces, so registries are complete."""
    from rl.algorithms import advantage, kl, policy_loss, preference  # noqa: F401
    from rl.credit import load_all as load_credit

    load_credit()
