"""One clean line for user errors (mini_lm/errors.py): a recipe or ``mini-lm`` command that fails on
the user's input ends with one ``error: ...`` line naming file/line/field and the fix, exit code
2, no traceback; ``MINI_LM_DEBUG=1`` or a bare ``--debug`` shows it; a bug keeps its traceback."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from mini_lm.cli import main as cli
from mini_lm.data.synthetic import write_world
from mini_lm.errors import ConfigError, call_reporting_user_errors, pop_debug_flag, run_main

from .conftest import REPO

SMALL = [
    "--model_family", "qwen2", "--hidden_size", "32", "--num_hidden_layers", "2",
    "--num_attention_heads", "4", "--max_position_embeddings", "64",
    "--per_device_train_batch_size", "2", "--max_steps", "1",
    "--disable_tqdm", "true", "--report_to", "none", "--eval_strategy", "no", "--probe", "false",
]  # fmt: skip
TINY = [*SMALL, "--block_size", "32", "--tokenizer_vocab_size", "320"]


def recipe_main(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_errors_recipe", REPO / f"recipes/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Bad input files, one per case."""
    root = tmp_path_factory.mktemp("bad")
    bios = write_world(root / "world", seed=0, n_people=10, bios_per_person=1)["bios"]
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    chat["messages"][1]["loss_weight"] = True
    (root / "chat.jsonl").write_text(json.dumps(chat) + "\n", encoding="utf-8")
    (root / "dup.yaml").write_text(
        f"train_files: [{bios}]\nhidden_size: 64\nhidden_size: 32\n", encoding="utf-8"
    )
    (root / "used").mkdir()
    (root / "used" / "config.json").write_text("{}")
    (root / "used" / "model.safetensors").write_bytes(b"0")
    return {"root": root, "bios": str(bios)}


CASES = {
    # case: (recipe, argv builder, the one line it must print)
    "duplicate YAML key": ("pretrain", lambda i: ["--config", i["root"] / "dup.yaml"], r"dup\.yaml:3: key 'hidden_size' is given twice"),
    "fraction out of range": ("pretrain", lambda i: [*TINY, "--train_files", i["bios"], "--validation_split", "1.5"], r"validation_split=1\.5 must be a fraction"),
    "missing corpus": ("pretrain", lambda i: [*TINY, "--train_files", i["root"] / "nowhere.txt"], r"corpus path not found: .*nowhere\.txt"),
    "rerun into a dir with a final model": ("pretrain", lambda i: [*TINY, "--train_files", i["bios"], "--output_dir", i["root"] / "used"], r"used already holds a run \(config\.json, model\.safetensors\): pass --resume_from_checkpoint last"),
    "resume from a missing checkpoint": ("pretrain", lambda i: [*TINY, "--train_files", i["bios"], "--resume_from_checkpoint", i["root"] / "checkpoint-7"], r"resume_from_checkpoint: no checkpoint dir at .*checkpoint-7"),
    "loss_weight true": ("sft", lambda i: [*SMALL, "--train_files", i["root"] / "chat.jsonl", "--tokenizer_vocab_size", "400", "--max_length", "32"], r"chat\.jsonl:1: messages\[1\]\.loss_weight must be 0 or 1, got True"),
    "MLM recipe without BERT": ("mlm", lambda i: ["--model_family", "qwen2", "--tokenizer_name_or_path", i["root"], "--train_files", i["bios"]], r"recipes/mlm\.py trains the BERT adapter"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_is_one_line_and_exit_code_2(case, inputs, tmp_path, capsys):
    recipe, argv, message = CASES[case]
    args = [str(a) for a in argv(inputs)]
    if "--output_dir" not in args:
        args += ["--output_dir", str(tmp_path / "out")]
    assert run_main(recipe_main(recipe), args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert re.search(message, errors[0]), errors[0]


def test_as_a_process_the_line_is_the_last_thing_printed_and_debug_shows_the_traceback(
    inputs, tmp_path, monkeypatch
):
    """Observed before: a full traceback (CorpusError chained), exit code 1."""
    args = [
        *TINY,
        "--output_dir",
        str(tmp_path / "out"),
        "--train_files",
        str(inputs["root"] / "nowhere.txt"),
    ]
    plain = subprocess.run(
        [sys.executable, str(REPO / "recipes/pretrain.py"), *args], capture_output=True, text=True, cwd=REPO
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("error: corpus path not found:")
    monkeypatch.setenv("MINI_LM_DEBUG", "1")  # in this process: a second interpreter start costs ~12 s
    with pytest.raises(Exception, match="corpus path not found") as raised:
        run_main(recipe_main("pretrain"), args)
    assert type(raised.value).__name__ == "CorpusError"


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setenv("MINI_LM_DEBUG", "0")  # recorded, so restored after the test

    def buggy(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_main(buggy, [])
    assert call_reporting_user_errors(lambda: 5) == 5


def test_a_bare_debug_flag_shows_tracebacks_hf_debug_option_is_left_alone(monkeypatch):
    monkeypatch.setenv("MINI_LM_DEBUG", "0")  # recorded, so restored after the test
    assert pop_debug_flag(["--debug", "underflow_overflow", "--x", "1"]) == [
        "--debug",
        "underflow_overflow",
        "--x",
        "1",
    ]
    assert os.environ["MINI_LM_DEBUG"] == "0"
    assert pop_debug_flag(["--x", "1", "--debug"]) == ["--x", "1"] and os.environ["MINI_LM_DEBUG"] == "1"

    def config_error(argv):
        raise ConfigError("bad")

    with pytest.raises(ConfigError):
        run_main(config_error, ["--debug"])


def test_the_cli_reports_config_errors_in_one_line(inputs, capsys):
    assert cli(["audit-data", "--config", str(inputs["root"] / "dup.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mini-lm audit-data: error: ") and "is given twice" in err[-1]


def test_the_error_line_reaches_stderr_in_one_write(monkeypatch):
    """Ranks of one job share stderr; unbuffered (``PYTHONUNBUFFERED=1``), ``print`` writes the text
    and the newline separately, and two ranks' lines ran together in CI. One write each."""

    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)
            return len(text)

        def flush(self):
            pass

    stderr = Recorder()
    monkeypatch.setattr(sys, "stderr", stderr)

    def fail():
        raise ConfigError("learning_rate must be positive")

    assert call_reporting_user_errors(fail, prog="mini-lm") == 2
    assert stderr.writes == ["mini-lm: error: learning_rate must be positive\n"]
