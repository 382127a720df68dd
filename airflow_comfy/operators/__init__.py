"""Operators for ComfyUI."""
