"""Launch consistency: what the launcher and its configs fix must agree with the training arguments.

    pinned = pinned_batch_values(args)   # {key: (value, where)} a DeepSpeed JSON / accelerate config pins
    check_global_batch(args, pinned)      # ConfigError naming the file, the values and the arithmetic

These read the process environment (``accelerate launch`` hands its DeepSpeed settings over in
``ACCELERATE_*`` variables) and the device; ``MiniLMTrainingArguments`` runs them when it is built,
so every recipe and every direct caller stops before any data or model work. Field and
cross-field checks of the recipe arguments live in mini_lm/validation.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import TrainingArguments

from .errors import ConfigError


def no_accelerator() -> bool:
    """Neither CUDA nor Apple MPS: the Trainer must then be told ``use_cpu=True`` (DeepSpeed's CPU ranks need it)."""
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return not torch.cuda.is_available() and not has_mps


_DS_BATCH_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")


def pinned_batch_values(args: TrainingArguments) -> dict[str, tuple[int, str]]:
    """Batch values a DeepSpeed JSON or the accelerate config fixes (not "auto"): {key: (value, where)}.

    --deepspeed ds.json holding {"train_batch_size": 32, "gradient_accumulation_steps": "auto"}
    -> {"train_batch_size": (32, "ds.json")}. Under ``accelerate launch`` the JSON is the accelerate
    config's deepspeed_config_file, and its deepspeed_config may pin gradient_accumulation_steps.
    """
    pinned, config = {}, args.deepspeed
    if not config and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        config = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        accum = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "")
        if accum.isdigit():
            pinned["gradient_accumulation_steps"] = (int(accum), "the accelerate config (deepspeed_config)")
    if isinstance(config, str) and Path(config).is_file():
        source = config
        try:
            config = json.loads(Path(config).read_text(encoding="utf-8"))
        except ValueError as err:
            raise ConfigError(f"deepspeed config {source}: cannot read it as JSON: {err}") from err
    elif isinstance(config, dict):
        source = "the deepspeed config dict"
    else:  # unset, or not a file: transformers takes base64 JSON too, and names a missing path itself
        return pinned
    pinned.update({k: (config[k], source) for k in _DS_BATCH_KEYS if isinstance(config.get(k), int)})
    return pinned


def check_global_batch(args: TrainingArguments, pinned: dict[str, tuple[int, str]] | None = None) -> None:
    """Global batch = per_device_train_batch_size x gradient_accumulation_steps x world size must
    agree with every value a DeepSpeed / accelerate config pins. Fail at start-up, naming the file:
    the Trainer's own check comes only when training starts, after data and model are built.

    per-device 4, accumulation 1, 2 processes, ds.json train_batch_size 16 -> ConfigError:
    "ds.json: train_batch_size=16, but ... 4 x 1 x 2 processes = global batch 8 ...".
    """
    pinned = pinned_batch_values(args) if pinned is None else pinned
    micro, accum, world = args.per_device_train_batch_size, args.gradient_accumulation_steps, args.world_size
    expected = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world,
    }
    wrong = {key: (value, source) for key, (value, source) in pinned.items() if value != expected[key]}
    if wrong:
        sources = sorted({source for _, source in wrong.values()})
        raise ConfigError(
            f"{' and '.join(sources)}: {', '.join(f'{k}={v}' for k, (v, _) in wrong.items())}, but the "
            f"training arguments give per_device_train_batch_size {micro} x gradient_accumulation_steps "
            f"{accum} x {world} processes = global batch {micro * accum * world}. Set {', '.join(wrong)} to "
            '"auto" there (the Trainer fills it in), or change the training arguments or the number of processes.'
        )
