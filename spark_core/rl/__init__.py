"""Training: the SFT baseline (TRL) and offline PPO (the SPaRK objective) on LoRA / QLoRA."""
