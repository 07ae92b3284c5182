"""``train-iforest`` stage: unsupervised isolation forest, saved as plain arrays and skops."""
