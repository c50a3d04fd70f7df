"""``CheckpointProbe``: at every save, the model answers fixed questions; answers, metrics and the
decoding settings go to checkpoint-N/probe.jsonl, the run's probes.jsonl, the logs (scalars on every
reporter; W&B table and TensorBoard text) and the console.

Distributed runs: with whole-model replicas (DDP, ZeRO-1/2) rank 0 generates while the others wait
in a gloo group of their own with a long timeout, so a slow probe never trips the training
group's NCCL/gloo timeout. With sharded parameters (ZeRO-3, FSDP) every rank must take part in
each forward pass, so all ranks generate (transformers syncs them) and rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..config import ProbeArguments
from ..probe_metrics import format_summary, metrics, summarize
from ..probing import (
    ProbeQuestion,
    ProbeStore,
    check_questions_fit,
    decoding_settings,
    load_questions,
    probe_checkpoint,
    record_key,
    save_probe_config,
)
from ..waiting import WaitingRoom

logger = logging.getLogger(__name__)


class CheckpointProbe(TrainerCallback):
    """Probe each checkpoint the Trainer writes: ``trainer.add_callback(CheckpointProbe(trainer, args))``.

    It holds the trainer for its tokenizer, its callbacks (where TensorBoard logs) and to know
    whether parameters are sharded. Questions and settings are checked when it is built.
    """

    def __init__(self, trainer, args: ProbeArguments, questions: list[ProbeQuestion] | None = None):
        self.trainer = trainer
        self.args = args
        self.questions = questions or default_fit(
            load_questions(args.probe_questions), args, trainer.processing_class
        )
        self.decodings = decoding_settings(args)
        check_questions_fit(
            self.questions,
            trainer.processing_class,
            args.probe_max_new_tokens,
            getattr(trainer.model.config, "max_position_embeddings", None),
        )
        self.store = ProbeStore(trainer.args.output_dir)
        self.seconds = 0.0  # spent probing in this session
        self.failures = 0  # probes that raised (logged with their traceback)
        self._began: float | None = None
        self._room: WaitingRoom | None = None
        self._table = None  # W&B incremental table: every row logged once, the UI shows them all
        self._writer = None  # our own TensorBoard SummaryWriter, in the Trainer's TensorBoard run dir

    # ------------------------------------------------------------------ Trainer events

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._began = time.perf_counter()
        self._room = WaitingRoom(timedelta(minutes=self.args.probe_wait_minutes))  # every rank gets here
        missing = False
        if state.is_world_process_zero:
            save_probe_config(args.output_dir, self.questions, self.args)
            # A resumed run restarts its timeline at global_step: later entries belong to the abandoned run.
            dropped = self.store.compact(keep_until_step=state.global_step)
            if dropped:
                logger.info(
                    "probes: dropped %d stale entries after step %d from %s",
                    dropped,
                    state.global_step,
                    self.store.path,
                )
            missing = state.global_step > 0 and self._missing_keys(state.global_step)
        if self._room.share(missing):
            # Resumed from a checkpoint whose probe never finished: the weights are that checkpoint's.
            logger.info(
                "probes: checkpoint-%d has no complete probe results, probing it now", state.global_step
            )
            self._probe(args, state, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        self._probe(args, state, model)

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ probing

    def _probe(self, args, state, model) -> None:
        began = time.perf_counter()
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        records = None
        if _parameters_sharded(self.trainer):
            records = self._answer(model, state)  # collective: a failure here must stop every rank
        elif state.is_world_process_zero:
            try:
                records = self._answer(model, state)
            except Exception:  # e.g. out of memory while generating: days of training matter more
                logger.exception(
                    "probe of checkpoint-%d failed; training goes on, `mini-lm probe %s "
                    "--steps %d` can redo it",
                    state.global_step,
                    args.output_dir,
                    state.global_step,
                )
                self.failures += 1
        if state.is_world_process_zero and records is not None:
            self.store.append(state.global_step, records, checkpoint if checkpoint.is_dir() else None)
        self._room.share(None)  # the other ranks wait here for rank 0 (long timeout)
        seconds = time.perf_counter() - began
        self.seconds += seconds
        if state.is_world_process_zero and records is not None:
            wall = max(time.perf_counter() - (self._began or began), 1e-9)
            summary = {**summarize(records), "probe/seconds": seconds, "probe/overhead": self.seconds / wall}
            self._report(state.global_step, records, summary)
            logger.info(
                format_summary(state.global_step, summary, len(self.questions), seconds, self.seconds / wall)
            )

    def _answer(self, model, state) -> list[dict]:
        device = next(model.parameters()).device
        # Sampling seeds the global RNG; training must not notice the probe (dropout, shuffling).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return probe_checkpoint(
                model,
                self.trainer.processing_class,
                self.questions,
                self.decodings,
                state.global_step,
                state.log_history,
                state.epoch,
                self.args.probe_batch_size,
            )

    def _missing_keys(self, step: int) -> bool:
        wanted = {
            record_key({"step": step, "mode": q.mode, "question_id": q.id, "decoding": d})
            for q in self.questions
            for d in self.decodings
        }
        return bool(wanted - self.store.keys_at(step))

    # ------------------------------------------------------------------ reporting

    def _report(self, step: int, records: list[dict], summary: dict[str, float]) -> None:
        """Scalars + answers to TensorBoard (scalars, text) and W&B (scalars, cumulative table).

        Through public APIs only: a SummaryWriter of our own (torch.utils.tensorboard) in the
        TensorBoard run dir the Trainer's ``TensorBoardCallback`` announces (its public
        ``logging_dir``; TensorBoard merges the event files of one dir), and ``wandb.log`` on the
        run the Trainer's ``WandbCallback`` started, as TRL's ``LogCompletionsCallback`` does.
        Not ``Trainer.log``: it would print ~40 numbers to the console at every save, and its
        TensorBoard path drops tables.
        """
        writer = self._tensorboard_writer()
        if writer is not None:
            for key, value in summary.items():
                writer.add_scalar(key, value, step)
            writer.add_text("probe/answers", answers_markdown(records), step)
            writer.flush()
        if "wandb" in (self.trainer.args.report_to or []):
            import wandb

            if wandb.run is not None:  # rank 0 of a run whose WandbCallback called wandb.init
                wandb.log(
                    {**summary, "probe/answers": self._cumulative_table(records), "train/global_step": step}
                )

    def _tensorboard_writer(self):
        from transformers.integrations import TensorBoardCallback

        log_dir = next(
            (
                c.logging_dir
                for c in self.trainer.callback_handler.callbacks
                if isinstance(c, TensorBoardCallback) and c.logging_dir
            ),
            None,
        )
        if log_dir is None:  # not reporting to TensorBoard
            return None
        if self._writer is None or self._writer.log_dir != log_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=log_dir)
        return self._writer

    def _cumulative_table(self, records: list[dict]):
        import wandb

        if self._table is None:
            # INCREMENTAL: each log adds the new rows and W&B shows all of them. A resumed run's
            # table starts with the earlier entries, so it stays cumulative across restarts.
            columns = table_columns()
            self._table = wandb.Table(columns=columns, log_mode="INCREMENTAL", allow_mixed_types=True)
            for record in self.store.records():
                if record["step"] < records[0]["step"]:
                    self._table.add_data(*table_row(record, columns))
        for record in records:
            self._table.add_data(*table_row(record, self._table.columns))
        return self._table


def default_fit(questions: list[ProbeQuestion], args: ProbeArguments, tokenizer) -> list[ProbeQuestion]:
    """The built-in set has chat questions; a tokenizer without a chat template (a BERT one, a plain
    GPT-2 one) skips them, counted. A file the user names is used as written (or fails)."""
    if args.probe_questions or getattr(tokenizer, "chat_template", None):
        return questions
    raw = [q for q in questions if q.mode == "raw"]
    logger.warning(
        "probes: %d built-in chat questions skipped, the tokenizer has no chat template",
        len(questions) - len(raw),
    )
    return raw


CONTEXT_COLUMNS = [
    "step",
    "train_loss",
    "eval_loss",
    "decoding",
    "mode",
    "group",
    "question",
    "answer",
    "expected",
]


def table_columns() -> list[str]:
    """The W&B answers table: who answered what, then the registry's table metrics."""
    return CONTEXT_COLUMNS + [m.name for m in metrics(table=True)]


def table_row(record: dict, columns: list[str]) -> list:
    return [record.get(c) for c in columns]


def answers_markdown(records: list[dict], limit: int = 200) -> str:
    """A Markdown table of answers (TensorBoard renders it in the Text tab)."""
    rows = ["| decoding | question | answer | expected | ✓ |", "|---|---|---|---|---|"]
    for r in records[:limit]:
        mark = {None: "", 1.0: "✓", 0.0: "✗"}.get(r.get("knowledge_contains"), "")
        cells = [r["decoding"], r["question"], r["answer"], r.get("expected") or "", mark]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ⏎ ")


def _parameters_sharded(trainer) -> bool:
    """ZeRO-3 / FSDP: a forward pass needs every rank."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or bool(getattr(trainer, "is_fsdp_enabled", False))
