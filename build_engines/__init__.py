"""Turns weights into engines per target: `python -m build_engines cpu` -> engines/cpu/.

The GB10 target (TensorRT-LLM) builds into engines/gb10/ with the same per-model layout, so
the Triton model repository serves either by pointing SPARK_ENGINE_DIR at the folder.
"""
