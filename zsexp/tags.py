"""Every MLflow tag zsexp writes or searches, named once.

Runs: a sweep's parent run and its trials' child runs, a selection run and its nested runs, an
ablation run and its nested runs.
Model versions: how a registered version was chosen (validation) and what it measured (test).
"""

TAG_SWEEP = "zsexp.sweep"                # the sweep a run belongs to
TAG_TRIAL = "zsexp.trial_id"             # a child run's Tune trial id
TAG_KIND = "zsexp.kind"                  # sweep | trial | selection | selection-run | ablation | ablation-run
TAG_OUTCOME = "zsexp.outcome"            # completed | early-stopped | failed
TAG_ERROR = "zsexp.error"                # why a trial or a sweep failed
TAG_SELECTION = "zsexp.selection"        # a selection job's name (sweep, k, seeds)
TAG_PAIR = "zsexp.pair"                  # a selection run's candidate, seed and phase
TAG_ABLATION = "zsexp.ablation"          # an ablation job's name
TAG_RUN = "zsexp.run"                    # an ablation run's variant, seed and data split
TAG_FINGERPRINT = "zsexp.fingerprint"    # the dataset's content fingerprint
TAG_BASELINE = "zsexp.baseline"          # the task's baseline beside the figures
TAG_BEST_TRIAL = "zsexp.best_trial"
TAG_TRIALS = "zsexp.trials"              # a sweep's trial target after `resume --trials` (the param is the first)
TAG_WARM_START = "zsexp.warm_start"      # the earlier sweep a sweep's sampler started from
TAG_REMOVED = "zsexp.removed"            # why a trial's run was ended KILLED and removed (resume: Tune never saved it)

# model versions
V_SWEEP = TAG_SWEEP
V_OBJECTIVE = "zsexp.objective"                   # the validation objective that chose it
V_MODE = "zsexp.mode"
V_VAL_MEAN = "zsexp.val_objective_mean"           # the decision: mean over seeds ...
V_VAL_STD = "zsexp.val_objective_std"
V_N_SEEDS = "zsexp.n_seeds"                       # ... over this many seeds
V_SEED = "zsexp.seed"
V_SEED_RULE = "zsexp.seed_rule"
V_TEST_NAME = "zsexp.test_objective_name"         # the report: the configuration's test mean ...
V_TEST_MODE = "zsexp.test_mode"
V_TEST_MEAN = "zsexp.test_objective_mean"
V_TEST_STD = "zsexp.test_objective_std"
V_TEST_VALUE = "zsexp.test_objective"             # ... and the registered seed's own test value

# experiments
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
