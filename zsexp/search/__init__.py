"""Distributed search: Ray Tune (Tuner, OptunaSearch, ASHA) with MLflow tracking from the driver."""
