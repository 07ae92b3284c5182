"""evaluate stage: blend both models into one calibrated 0-100 risk score and report on test."""
