"""Hooks: the sync ComfyUI client (``ComfyUIHook``) and the pieces it is built from."""
