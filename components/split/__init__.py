"""split stage: time-based historic lake / live stream split (see README.md)."""
