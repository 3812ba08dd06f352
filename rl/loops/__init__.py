"""One loop per training family, each readable top to bottom: grpo.py (online RL; RMT rides on it)."""
