"""Pull: Waldur orders and project teams -> SLURM accounts, associations and limits (plan pure, then apply)."""
