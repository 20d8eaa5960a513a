"""``zsexp ablate``: a paper's ablation table (or named variants) as a platform job.

Rows x seeds x data splits, each one Ray trial fitted on train + val for a fixed budget and evaluated
once on test (no decision is taken, so nothing looks at test to choose); the task's baseline and
chance on the same splits; a paired test of every row against the complete model; MLflow runs.
"""

from zsexp.ablation.job import AblateOptions, run_ablation
from zsexp.ablation.variants import Variant, describe_variants, named_variants, resolve_variants

__all__ = ["AblateOptions", "run_ablation", "Variant", "describe_variants", "named_variants", "resolve_variants"]
