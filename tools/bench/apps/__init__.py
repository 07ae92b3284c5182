"""Baseline apps the serving benchmark runs under uvicorn next to ours (factories only)."""
