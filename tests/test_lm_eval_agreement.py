"""mini_lm's benchmark scorer agrees with lm-evaluation-harness: the same tiny model, CMMLU CSVs
(two subjects) and shots give the same log-likelihood for every choice and so the same prediction
for every question. lm-eval reads the CSVs through a local task definition written here (its own
cmmlu task reads the hub): dataset ``csv``, the cmmlu template's doc_to_text / choices / target,
the dev split as few-shot examples (first_n), mini_lm's subject description. Offline.

Negative control: the same comparison notices a prompt that differs only in lm-eval's target
delimiter (the space before the letter)."""

import json
from dataclasses import replace

import pytest

from mini_lm.evaluation import BenchmarkSpec, evaluate, load_benchmark
from mini_lm.generation import load_for_generation
from mini_lm.multiple_choice import cmmlu_description

from .eval_helpers import save_tiny_qwen

SUBJECTS = ("agronomy", "anatomy")
LIMIT = 4


def lm_eval_task(shared_data, folder, subject: str) -> str:
    """A local lm-eval task over CMMLU's CSVs for one subject; its name."""
    data = shared_data / "eval" / "cmmlu"
    task = {
        "task": f"local_cmmlu_{subject}",
        "dataset_path": "csv",
        "dataset_kwargs": {
            "data_files": {
                "test": str(data / "test" / f"{subject}.csv"),
                "dev": str(data / "dev" / f"{subject}.csv"),
            }
        },
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "doc_to_text": "{{Question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "{{['A', 'B', 'C', 'D'].index(Answer)}}",
        "description": cmmlu_description(subject),
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (folder / f"{subject}.yaml").write_text(
        json.dumps(task, ensure_ascii=False), encoding="utf-8"
    )  # JSON is YAML
    return task["task"]


@pytest.fixture(scope="module")
def model_dir(shared_data, tmp_path_factory):
    return save_tiny_qwen(shared_data, tmp_path_factory.mktemp("tiny_qwen"), seed=1)


@pytest.mark.parametrize("shots", [2])  # 0-shot is the same prompt without the solved examples
def test_mini_lm_and_lm_eval_give_the_same_loglikelihoods_and_predictions(
    model_dir, shared_data, tmp_path, shots
):
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = [lm_eval_task(shared_data, tmp_path, s) for s in SUBJECTS]
    theirs = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": "float32"},
        tasks=tasks,
        num_fewshot=shots,
        limit=LIMIT,
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
        batch_size=8,
        device="cpu",
    )
    model, tokenizer = load_for_generation(str(model_dir))
    spec = BenchmarkSpec("cmmlu", str(shared_data / "eval/cmmlu"), list(SUBJECTS), shots, LIMIT)
    items = load_benchmark(spec, tokenizer)
    ours = evaluate(model, tokenizer, items, spec, batch_size=8)

    for subject, task in zip(SUBJECTS, tasks):
        samples = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
        mine = [p for p in ours.predictions if p["subject"] == subject]
        assert len(samples) == len(mine) == LIMIT
        for sample, prediction in zip(samples, mine):
            their_ll = [resp[0] for resp in sample["filtered_resps"]]
            assert prediction["logprobs"] == pytest.approx(their_ll, abs=2e-4), prediction["id"]
            assert prediction["answer"] == sample["target"]
            assert float(prediction["predicted_sum"] == prediction["answer"]) == sample["acc"]
            assert float(prediction["predicted"] == prediction["answer"]) == sample["acc_norm"]
        row = next(r for r in ours.subjects if r.subject == subject)
        assert row.accuracy_sum == theirs["results"][task]["acc,none"]
    predicted = [p["predicted"] for p in ours.predictions]
    assert len(set(predicted)) > 1, (
        "the model must not answer one letter everywhere, or agreement says little"
    )

    # Negative control: drop the target delimiter (" A" scored as "A") and the comparison fails.
    bare = [replace(i, prompt=i.prompt.rstrip(" ")) for i in items]
    bare_ll = evaluate(model, tokenizer, bare, spec).predictions
    sample = sorted(theirs["samples"][tasks[0]], key=lambda s: s["doc_id"])[0]
    assert bare_ll[0]["logprobs"] != pytest.approx([r[0] for r in sample["filtered_resps"]], abs=2e-4)
