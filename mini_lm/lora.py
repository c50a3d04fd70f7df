"""LoRA through peft: wrap a model for training, and merge a saved adapter into a plain HF model.

model = apply_lora(model, LoraArguments(use_peft=True, lora_r=8))     # train adapters only
merge_adapter("runs/sft_lora", "runs/sft_lora_merged")               # mini-lm export --merge
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import LoraArguments

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def apply_lora(model, args: LoraArguments):
    """The model itself when ``use_peft`` is off; else a PeftModel whose LoRA weights alone train."""
    if not args.use_peft:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    targets = args.lora_target_modules
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=args.lora_modules_to_save or None,
    )
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d alpha=%d on %s: %.2fM of %.2fM parameters train (%.2f%%)",
        args.lora_r,
        args.lora_alpha,
        targets,
        trainable / 1e6,
        total / 1e6,
        100 * trainable / total,
    )
    return model


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, as recorded in adapter_config.json."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/{ADAPTER_CONFIG} names no base model: pass --base")
    return base


def check_merge_output(
    output_dir: str | Path, adapter_dir: str | Path, base: str | Path, force: bool
) -> None:
    """Refuse (FileExistsError) an output that would lose work. Always: the base model's own dir
    (the adapter needs that base to be merged again), the adapter dir, and any other adapter dir
    (beside an adapter_config.json, from_pretrained loads base + adapter and ignores the merged
    weights). Unless ``force``: any other non-empty dir. Symlinks are followed.
    """
    out = Path(output_dir)
    if out.is_file():
        raise FileExistsError(f"--output {out} is a file: give a directory for the merged model")
    if not out.exists():
        return
    target = out.resolve()
    if target == Path(base).resolve():
        raise FileExistsError(
            f"--output {out} is the base model's own dir: merging into it would overwrite the base "
            "this adapter was trained on; choose another --output"
        )
    if target == Path(adapter_dir).resolve() or is_adapter_dir(target):
        raise FileExistsError(
            f"--output {out} is a LoRA adapter dir (holds {ADAPTER_CONFIG}): merged weights there "
            "would be shadowed by the adapter and overwrite the run; choose another --output"
        )
    present = sorted(p.name for p in target.iterdir())
    if present and not force:
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise FileExistsError(
            f"--output {out} is not empty ({len(present)} entries: {shown}); pass --force to write "
            "the merged model into it, or choose a new dir"
        )


def merge_adapter(
    adapter_dir: str | Path,
    output_dir: str | Path,
    base: str | None = None,
    dtype: str = "auto",
    force: bool = False,
) -> Path:
    """Base + LoRA adapter -> merged weights saved as a plain HF checkpoint (with the adapter's
    tokenizer and chat template), loadable by ``AutoModelForCausalLM.from_pretrained`` alone.
    ``output_dir`` is checked first (``check_merge_output``): nothing is loaded for a refused one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .models import set_generation_ids
    from .tokenization import load_tokenizer, save_tokenizer

    if not is_adapter_dir(adapter_dir):
        raise ValueError(f"{adapter_dir} holds no {ADAPTER_CONFIG}: not a LoRA adapter dir")
    base = base or adapter_base(adapter_dir)
    if not Path(base).exists():
        raise FileNotFoundError(
            f"base model {base} (from {adapter_dir}/{ADAPTER_CONFIG}) not found: pass --base"
        )
    check_merge_output(output_dir, adapter_dir, base, force)
    tokenizer = load_tokenizer(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    set_generation_ids(model, tokenizer)
    model.save_pretrained(output_dir)
    save_tokenizer(tokenizer, output_dir)
    logger.info("merged %s into %s -> %s", adapter_dir, base, output_dir)
    return Path(output_dir)
