"""Push: SLURM usage, limits and associations -> Waldur (plan pure, then apply)."""
