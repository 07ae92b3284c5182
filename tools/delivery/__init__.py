"""Delivery: bake the champion bundle into an image folder, record what was deployed."""
