"""The GPU verification kit behind bench/gpu_check.py: checks, report, dry run."""
