"""Triggers for ComfyUI."""
