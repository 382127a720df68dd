"""Sensors for ComfyUI."""
