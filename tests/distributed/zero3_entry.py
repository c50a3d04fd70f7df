"""torchrun entry for ZeRO-3 probe tests on CPU: initialise DeepSpeed's communication before the
recipe runs, then run recipes/pretrain.py unchanged.

Why: on CPU (use_cpu=True) TrainingArguments sets up torch.distributed without DeepSpeed's comm,
so ``deepspeed.zero.Init`` (used by ``from_config`` under ZeRO-3) sees world size 1 and fails its
batch check (8 != 4 * 1 * 1). On GPUs the Trainer initialises DeepSpeed's comm itself.
"""

import runpy
import sys
from pathlib import Path

import deepspeed

deepspeed.init_distributed(dist_backend="gloo")
recipe = Path(__file__).resolve().parents[2] / "recipes" / "pretrain.py"
sys.argv = [str(recipe), *sys.argv[1:]]
runpy.run_path(str(recipe), run_name="__main__")
