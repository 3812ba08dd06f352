"""Training objectives: what the engine optimises (GRPO family + credit chain, RMT's NTP term, preference losses)."""
