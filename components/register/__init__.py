"""register stage: build the serving bundle, register it in MLflow, gate the champion alias."""
