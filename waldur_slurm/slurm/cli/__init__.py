"""The command-line SLURM backend: sacctmgr/sacct through native or docker-exec executors."""
