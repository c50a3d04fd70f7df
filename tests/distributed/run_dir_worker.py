"""Worker for test_run_dir_first: one "node" of two (RANK r, LOCAL_RANK 0, one process per node)
on a shared output_dir. Prints ``saw <bool>``: whether a trained tokenizer was already in output_dir
when this process came to train one, then the vocabulary's size. Rank 0 takes 2 s longer, so a
process that does not wait for it cannot find its tokenizer.

    python tests/distributed/run_dir_worker.py OUTPUT_DIR run_dir_first|main_process_first
"""

import sys
import time
from pathlib import Path

from transformers import TrainingArguments

from mini_lm.config import ModelArguments
from mini_lm.tokenization import prepare_tokenizer
from mini_lm.training import run_dir_first

TEXTS = [f"第{i}行：林黛玉在潇湘馆读书，贾宝玉来看她。Line {i} of a shared corpus." for i in range(400)]


def main(output_dir: str, guard: str) -> None:
    args = TrainingArguments(output_dir=output_dir, use_cpu=True, report_to="none")
    first = run_dir_first(args, "tokenizer") if guard == "run_dir_first" else args.main_process_first()
    with first:
        if args.process_index == 0:
            time.sleep(2)
        saw = (Path(output_dir) / "tokenizer/tokenizer.json").is_file()
        tokenizer = prepare_tokenizer(ModelArguments(model_family="qwen2"), output_dir, 400, TEXTS)
    print(f"saw {saw} {len(tokenizer)}", flush=True)
    args.distributed_state.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
