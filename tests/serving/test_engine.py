"""The generation engine's batching rules, streaming with a result and cancellation, stop strings."""

from __future__ import annotations

import threading

import pytest

from mini_lm.generation import GenerationSettings, generate, stream
from mini_lm.serving.engine import GenerationEngine, Job, ServerBusy
from mini_lm.serving.stops import StopStringFilter, cut_at_stop


def greedy(n: int) -> GenerationSettings:
    return GenerationSettings(do_sample=False, max_new_tokens=n)


def sampled(seed: int) -> GenerationSettings:
    return GenerationSettings(do_sample=True, temperature=1.5, max_new_tokens=10, seed=seed)


@pytest.fixture
def engine(served_model):
    model, tokenizer = served_model
    engine = GenerationEngine(model, tokenizer, max_pending=8, max_batch_size=4)
    engine.start()
    yield engine
    engine.close()


def gate(engine: GenerationEngine) -> threading.Event:
    """Occupy the worker with a streaming job until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(_piece):
        started.set()
        release.wait(60)

    engine.submit(Job(["王伟"], greedy(2), on_piece=hold))
    assert started.wait(60)
    return release


def test_queued_jobs_batch_by_settings_and_seeded_samples_run_alone(engine, served_model):
    model, tokenizer = served_model
    release = gate(engine)
    jobs = {
        "a": Job(["王伟出生于"], greedy(8)),
        "b": Job(["李娜在", "Na Li"], greedy(8)),  # same settings as a: one batch of 3 rows
        "c": Job(["Wei Wang"], greedy(5)),  # other settings: its own batch
        "d": Job(["王伟"], sampled(3)),  # seeded samples run alone, so the seed reproduces them
        "e": Job(["王伟"], sampled(3)),
        "f": Job(["王伟", "李娜", "Na", "Wei"], greedy(8)),  # would overflow the batch of a + b
    }
    for job in jobs.values():
        engine.submit(job)
    engine.submit(Job(["x"], greedy(1)))  # 1 running + 7 queued = max_pending
    with pytest.raises(ServerBusy):
        engine.submit(Job(["y"], greedy(1)))
    release.set()
    results = {name: job.future.result(60) for name, job in jobs.items()}
    status = engine.status()
    # gate, [a b], c, d, e, f, [x] = 7 forward batches for 8 requests
    assert status["batches"] == 7 and status["requests"] == 8 and status["largest_batch"] == 4, status
    rows = ["王伟出生于", "李娜在", "Na Li"]
    assert [r.text for r in results["a"] + results["b"]] == [
        r.text for r in generate(model, tokenizer, rows, greedy(8))
    ]
    assert results["d"][0].token_ids == results["e"][0].token_ids
    other_seed = generate(model, tokenizer, ["王伟"], sampled(4))[0]
    assert other_seed.token_ids != results["d"][0].token_ids  # the seed matters: equality above is not luck


def test_a_job_whose_client_left_while_queued_is_dropped_and_its_batch_mates_run(engine, served_model):
    model, tokenizer = served_model
    release = gate(engine)
    left, stayed, cancelled_future = (
        Job(["王伟"], greedy(8)),
        Job(["李娜在"], greedy(8)),
        Job(["Na"], greedy(8)),
    )
    for job in (left, stayed, cancelled_future):
        engine.submit(job)
    left.cancel.set()  # what the server does when the client hangs up
    cancelled_future.future.cancel()  # ... and this, while the job is queued
    release.set()
    assert [r.text for r in stayed.future.result(60)] == [
        r.text for r in generate(model, tokenizer, ["李娜在"], greedy(8))
    ]
    assert left.future.cancelled() and cancelled_future.future.cancelled()
    status = engine.status()
    assert status["requests"] == 2 and status["dropped"] == 2, status  # the gate and `stayed`


def drain(pieces) -> tuple[list[str], object]:
    """All text pieces of a stream() generator, and its return value."""
    seen = []
    while True:
        try:
            seen.append(next(pieces))
        except StopIteration as done:
            return seen, done.value


def test_stream_returns_its_result_and_can_be_cancelled(endless_model, tiny_tokenizer):
    seen, result = drain(stream(endless_model, tiny_tokenizer, "王伟", greedy(30)))
    reference = generate(endless_model, tiny_tokenizer, ["王伟"], greedy(30))[0]
    assert "".join(seen) == result.text == reference.text and result.token_ids == reference.token_ids
    assert len(result.token_ids) == 30 and not result.stopped

    cancel = threading.Event()
    pieces = stream(endless_model, tiny_tokenizer, "王伟", greedy(3000), cancel=cancel)
    next(pieces)
    cancel.set()
    _, cancelled = drain(pieces)
    assert 0 < len(cancelled.token_ids) < 1000 and not cancelled.stopped


def test_cut_at_stop():
    assert cut_at_stop("王伟出生于1987年", ["1987", "年"]) == ("王伟出生于", True)
    assert cut_at_stop("Na Li", ["\n"]) == ("Na Li", False)


@pytest.mark.parametrize(
    "pieces",
    [["Hello wor", "ld END tail"], ["Hello world E", "N", "D tail"], ["Hello world ", "EN", "Dless"]],
)
def test_stop_filter_holds_back_partial_stops(pieces):
    f = StopStringFilter(["END"])
    out = "".join(f.feed(p) for p in pieces) + f.flush()
    assert out == "Hello world " and f.stopped


def test_stop_filter_releases_text_that_was_not_a_stop():
    f = StopStringFilter(["END"])
    assert f.feed("abc E") == "abc " and f.feed("ND") == "" and f.stopped  # held, then matched
    g = StopStringFilter(["END"])
    assert g.feed("abc E") == "abc " and g.feed("x") == "Ex" and g.flush() == "" and not g.stopped
    h = StopStringFilter(["END"])
    assert h.feed("abc EN") == "abc " and h.flush() == "EN"  # the stream ended: held text is not lost
