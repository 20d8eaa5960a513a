"""``zsexp ablate``: a paper's ablation table (or named variants) as a platform job.

Rows x seeds x data splits, each one Ray trial fitted on train + val for a fixed budget and evaluated
once on test (no decision is taken, so nothing looks at test to choose); the task's baseline and
chance on the same splits; a paired test of every row against the complete model; MLflow runs.

The modules: ``options`` (what the job is asked), ``variants`` (the rows), ``paper`` (the papers'
tables), ``job`` (plan and Ray runs), ``table`` (statistics and files), ``tracking`` (MLflow).  Nothing is
imported here, so reading the options (``zsexp --help``) does not import Ray.
"""
