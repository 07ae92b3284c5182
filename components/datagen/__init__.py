"""datagen stage: synthetic labelled POS transactions (see README.md)."""
