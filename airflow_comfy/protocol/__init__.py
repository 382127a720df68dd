"""The sans-I/O core: facts about ComfyUI's protocol, shared by the hook, the trigger and the stand-in.

Nothing in this package opens a socket, reads a file or imports Airflow, so every module here is
cheap to import and tested with plain data (the recorded transcripts).
"""
