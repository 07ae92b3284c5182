"""``train-xgb`` stage: supervised XGBoost fraud classifier (production + novelty boosters)."""
