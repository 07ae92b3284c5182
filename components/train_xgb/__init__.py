"""``train-xgb`` stage: supervised XGBoost fraud classifier (production + leave-one-type-out fold boosters)."""
