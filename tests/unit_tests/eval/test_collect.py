"""collect: one durable row per question, resumable without duplicates or losses; outcomes replayed from it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.collect import CollectSettings, collect
from adaptive_ttc.eval.concurrency import ConcurrentLatencyWarning
from adaptive_ttc.eval.datasets import Question
from adaptive_ttc.eval.graders import math_grader
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.eval.train import train_router
from adaptive_ttc.router.configs import DEFAULT_GRID, parse_grid
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.types import GenerationRequest, GenerationResult
from tests.fakes import TableScorer


class _CrashError(Exception):
    """Stands for a crash or Ctrl-C in the middle of a question."""


QUESTIONS = [Question(f"q{i}", f"What is {i} plus {i}?", str(2 * i), f"part{i % 2}") for i in range(6)]


def _responder(request: GenerationRequest, index: int) -> str:
    words = request.messages[-1].content.split()
    if words[0] != "What":  # the profile's measurement prompts
        return "one two three four"
    number = int(words[2])
    rng = random.Random(f"{number}-{index}-{request.seed}-{request.temperature}")
    right = request.temperature == 0.0 or rng.random() < 0.6
    return "Let me add. " * (1 + index % 3) + f"The answer is {2 * number if right else number}."


async def _collect(out: Path, questions: list[Question], backend: FakeBackend | None = None) -> dict[str, object]:
    return await collect(
        questions,
        CollectSettings(grid=DEFAULT_GRID, max_tokens=64),
        backend or FakeBackend(_responder),
        out,
        dataset="synthetic",
        label="fake",
        grader=math_grader,
        profile=False,
    )


async def test_one_row_per_question_with_every_candidate(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl.gz"
    summary = await _collect(out, QUESTIONS)
    assert summary["collected"] == 6
    log = read_log(out)
    assert log.header.grid == tuple(c.label for c in DEFAULT_GRID)
    assert log.header.settings["pool"] == 16
    row = log.rows[0]
    assert len(row["pool"]["candidates"]) == 16
    assert row["greedy"]["candidates"][0]["correct"] is True
    candidate = row["pool"]["candidates"][0]
    assert set(candidate) >= {"text", "answer", "correct", "output_tokens", "finish_reason"}
    assert row["pool"]["input_tokens"] > 0
    assert row["pool"]["latency_s"] >= 0


async def test_resume_after_a_crash_never_duplicates_or_loses_rows(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl.gz"
    calls = 0

    def crashing(request: GenerationRequest, index: int) -> str:
        nonlocal calls
        calls += 1
        if calls > 40:  # the 3rd question's pool: two questions are complete
            raise _CrashError
        return _responder(request, index)

    with pytest.raises(_CrashError):
        await _collect(out, QUESTIONS, FakeBackend(crashing))
    assert [r["id"] for r in read_log(out).rows] == ["q0", "q1"]
    summary = await _collect(out, QUESTIONS)
    assert summary["skipped_already_logged"] == 2
    assert [r["id"] for r in read_log(out).rows] == [q.id for q in QUESTIONS]
    again = await _collect(out, QUESTIONS)
    assert again["collected"] == 0


async def test_resume_with_another_grid_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    await _collect(out, QUESTIONS[:1])
    with pytest.raises(ConfigurationError, match=r"log\.jsonl:1: .*grid"):
        await collect(
            QUESTIONS,
            CollectSettings(grid=parse_grid(["greedy"]), max_tokens=64),
            FakeBackend(_responder),
            out,
            dataset="synthetic",
            label="fake",
            grader=math_grader,
            profile=False,
        )


def test_settings_check_the_pool_and_the_scorer() -> None:
    with pytest.raises(ConfigurationError, match="smaller than the grid's largest"):
        CollectSettings(grid=DEFAULT_GRID, pool=8)
    with pytest.raises(ConfigurationError, match="need --scorer"):
        CollectSettings(grid=parse_grid(["greedy", "bon-reward-2"]))


async def test_reward_selectors_and_beam_search_with_a_scorer(tmp_path: Path) -> None:
    grid = parse_grid(["greedy", "bon-majority-2", "bon-reward-4", "beam-2x2x3"])
    out = tmp_path / "log.jsonl"
    scorer = TableScorer({})
    await collect(
        QUESTIONS[:2],
        CollectSettings(grid=grid, scorer="table", max_tokens=64),
        FakeBackend(_responder),
        out,
        dataset="synthetic",
        label="fake",
        grader=math_grader,
        scorer=scorer,
        profile=False,
    )
    row = read_log(out).rows[0]
    assert all("score" in c for c in row["pool"]["candidates"])
    beam = row["beams"]["beam-2x2x3"]
    assert beam["steps"] >= 1
    assert beam["candidates"]
    outcomes = log_outcomes(read_log(out))
    assert set(outcomes["q0"]) == {c.label for c in grid}


async def test_profile_is_measured_once_and_kept_in_the_header(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    backend = FakeBackend(_responder)
    settings = CollectSettings(grid=parse_grid(["greedy", "bon-majority-2"]), max_tokens=64)
    kwargs = {"dataset": "synthetic", "label": "fake", "grader": math_grader}
    await collect(QUESTIONS[:1], settings, backend, out, **kwargs)  # type: ignore[arg-type]
    profile = read_log(out).header.profile
    assert profile is not None
    assert set(profile["decode_tokens_per_s"]) == {"1", "2"}
    requests = len(backend.requests)
    await collect(QUESTIONS[:2], settings, backend, out, **kwargs)  # type: ignore[arg-type]
    assert len(backend.requests) == requests + 2  # one more question (greedy + pool), no new profile


def test_soft_labels_tokens_and_latency_from_the_pool(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    asyncio.run(_collect(out, QUESTIONS[:3]))
    log = read_log(out)
    outcomes = log_outcomes(log)
    for row in log.rows:
        cands = row["pool"]["candidates"]
        result = outcomes[row["id"]]
        assert result["greedy"].accuracy == 1.0
        mean_out = sum(c["output_tokens"] for c in cands) / len(cands)
        for n in (2, 4, 8, 16):
            o = result[f"bon-majority-{n}"]
            assert 0.0 <= o.accuracy <= 1.0
            assert o.input_tokens == row["pool"]["input_tokens"]
            assert o.output_tokens == pytest.approx(n * mean_out, rel=0.35)
        full = result["bon-majority-16"]
        assert full.latency_s == pytest.approx(row["pool"]["latency_s"])  # N = pool: measured latency
        assert full.longest_tokens == max(c["output_tokens"] for c in cands)
    assert log_outcomes(log) == outcomes  # seeded: the same soft labels every time


def test_latency_of_smaller_n_follows_the_profile(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    asyncio.run(_collect(out, QUESTIONS[:1]))
    log = read_log(out)
    row = log.rows[0]
    row["pool"]["latency_s"] = 10.0
    for cand in row["pool"]["candidates"]:
        cand["output_tokens"] = 100
    profile = BackendProfile("fake", "fake", 0.0, 1e9, {1: 10.0, 16: 80.0})
    log.header = type(log.header)(log.header.grid, log.header.dataset, log.header.settings, _as_json(profile))
    outcomes = log_outcomes(log)["q0"]
    # per-sequence speed: 10 tok/s alone, 5 tok/s in a batch of 16: one sequence takes half the pool's time.
    assert outcomes["bon-majority-16"].latency_s == pytest.approx(10.0)
    assert outcomes["bon-majority-2"].latency_s < outcomes["bon-majority-16"].latency_s
    log.header = type(log.header)(log.header.grid, log.header.dataset, log.header.settings, None)
    assert log_outcomes(log)["q0"]["bon-majority-2"].latency_s == pytest.approx(10.0)  # no profile: same length


def _as_json(profile: BackendProfile) -> dict[str, object]:
    return {
        "backend": profile.backend,
        "model": profile.model,
        "request_overhead_s": profile.request_overhead_s,
        "prefill_tokens_per_s": profile.prefill_tokens_per_s,
        "decode_tokens_per_s": {str(k): v for k, v in profile.decode_tokens_per_s.items()},
    }


def test_rows_missing_what_the_grid_needs_name_the_line(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    asyncio.run(_collect(out, QUESTIONS[:2]))
    log = read_log(out)
    del log.rows[1]["pool"]
    with pytest.raises(ConfigurationError, match=r"log\.jsonl:3: row 'q1' is incomplete"):
        log_outcomes(log)


def test_vllm_beam_runs_on_its_own_and_replays_as_it_ran(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    grid = parse_grid(["greedy", "vllm-beam-2"])
    settings = CollectSettings(grid=grid, max_tokens=64)
    kwargs = {"dataset": "synthetic", "label": "fake", "grader": math_grader, "profile": False}
    backend = FakeBackend(_responder)
    asyncio.run(collect(QUESTIONS[:1], settings, backend, out, **kwargs))  # type: ignore[arg-type]
    row = read_log(out).rows[0]
    run = row["beams"]["vllm-beam-2"]
    assert len(run["candidates"]) == 2
    assert any(r.use_beam_search and r.n == 2 for r in backend.requests)
    outcome = log_outcomes(read_log(out))["q0"]["vllm-beam-2"]
    assert outcome.accuracy == float(run["candidates"][run["selected"]]["correct"])
    assert outcome.output_tokens == run["output_tokens"]


# --- several questions at once (--concurrency) ---------------------------------------------------------------------

TIMING = frozenset({"latency_s", "score_latency_s", "seconds"})


def _untimed(value: object) -> object:
    """``value`` without its wall-clock measurements (the only part of a row that may differ between runs)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _number(request: GenerationRequest) -> int:
    return int(request.messages[-1].content.split()[2])


class _Staggered(FakeBackend):
    """A fake whose requests for question i take longer the smaller i is, and that counts requests in flight."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0
        self.most_in_flight = 0

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005 * (len(QUESTIONS) - _number(requests[0])))
            return await super().generate(requests)
        finally:
            self.in_flight -= 1


async def _collect_at(out: Path, concurrency: int, backend: FakeBackend, questions: list[Question] = QUESTIONS) -> None:
    await collect(
        questions,
        CollectSettings(grid=DEFAULT_GRID, max_tokens=64),
        backend,
        out,
        dataset="synthetic",
        label="fake",
        grader=math_grader,
        profile=False,
        concurrency=concurrency,
    )


def _file_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()[1:]]


async def test_concurrency_gives_the_same_rows_read_in_dataset_order(tmp_path: Path) -> None:
    one, four = _Staggered(_responder), _Staggered(_responder)
    await _collect_at(tmp_path / "one.jsonl", 1, one)
    await _collect_at(tmp_path / "four.jsonl", 4, four)
    assert (one.most_in_flight, four.most_in_flight) == (1, 4)
    dataset_order = [q.id for q in QUESTIONS]
    assert _file_ids(tmp_path / "one.jsonl") == dataset_order
    assert _file_ids(tmp_path / "four.jsonl") != dataset_order  # appended as they finished: q3 first
    logs = [read_log(tmp_path / name) for name in ("one.jsonl", "four.jsonl")]
    assert [log.header.settings["concurrency"] for log in logs] == [1, 4]
    assert [r["id"] for r in logs[1].rows] == dataset_order  # read back in dataset order
    assert [_untimed(r) for r in logs[0].rows] == [_untimed(r) for r in logs[1].rows]


async def test_a_failure_cancels_the_questions_in_flight_and_resume_collects_only_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl.gz"

    def failing(request: GenerationRequest, index: int) -> str:
        if _number(request) == 4:
            raise _CrashError
        return _responder(request, index)

    # 10 ms a request: q0-q3 finish together, then q4 fails on its first request while q5 waits for its second
    crashing = FakeBackend(failing, latency_s=0.01)
    with pytest.raises(_CrashError):
        await _collect_at(out, 4, crashing)
    assert sorted(r["id"] for r in read_log(out).rows) == ["q0", "q1", "q2", "q3"]  # no torn line: no warning
    assert any(_number(r) == 5 for r in crashing.requests)  # q5 was in flight and was cancelled
    resumed = _Staggered(_responder)
    await _collect_at(out, 4, resumed)
    assert {_number(r) for r in resumed.requests} == {4, 5}  # only the missing questions
    await _collect_at(tmp_path / "clean.jsonl", 1, FakeBackend(_responder))
    clean = read_log(tmp_path / "clean.jsonl").rows
    assert [_untimed(r) for r in read_log(out).rows] == [_untimed(r) for r in clean]


@pytest.mark.parametrize("concurrency", [0, -1])
async def test_concurrency_below_one_is_refused_before_anything_runs(tmp_path: Path, concurrency: int) -> None:
    backend = FakeBackend(_responder)
    with pytest.raises(ConfigurationError, match=rf"--concurrency must be a whole number >= 1.*got {concurrency}"):
        await _collect_at(tmp_path / "log.jsonl", concurrency, backend)
    assert not (tmp_path / "log.jsonl").exists()
    assert not backend.requests


async def test_older_logs_read_as_concurrency_one_and_resume_only_at_it(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    await _collect_at(out, 1, FakeBackend(_responder), QUESTIONS[:2])
    lines = out.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    del header["settings"]["concurrency"]  # as written before the option existed
    for row in lines[1:]:
        assert json.loads(row).pop("position") is not None
    out.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    with pytest.raises(ConfigurationError, match=r"settings \['concurrency'\]"):
        await _collect_at(out, 2, FakeBackend(_responder), QUESTIONS)
    await _collect_at(out, 1, FakeBackend(_responder), QUESTIONS)
    assert [r["id"] for r in read_log(out).rows] == [q.id for q in QUESTIONS]


MORE = [Question(f"q{i}", f"What is {i} plus {i}?", str(2 * i), f"part{i % 2}") for i in range(12)]
DUPLICATED = [*MORE, Question("dup-a", MORE[3].question, "6", "part1"), Question("dup-b", MORE[8].question, "16", "")]


async def test_training_does_not_depend_on_file_order_and_warns_once_about_loaded_latency(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    await _collect_at(out, 1, FakeBackend(_responder), DUPLICATED)
    header, *rows = out.read_text().splitlines(keepends=True)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text(header + "".join(reversed(rows)))
    ids = _file_ids(shuffled)
    assert ids.index("dup-a") < ids.index("q3")  # read in file order, dup-a's row would be the one kept
    ordered, scrambled = read_log(out), read_log(shuffled)
    assert scrambled.rows == ordered.rows
    router, report = train_router(ordered, resamples=4)
    again, report_again = train_router(scrambled, resamples=4)
    assert router.meta["split"] == again.meta["split"]
    assert router.meta["split"]["duplicate_texts_dropped"] == 2
    assert report == report_again
    loaded = json.loads(header)
    loaded["settings"]["concurrency"] = 4
    concurrent = tmp_path / "concurrent.jsonl"
    concurrent.write_text(json.dumps(loaded) + "\n" + "".join(rows))
    with pytest.warns(ConcurrentLatencyWarning, match=r"concurrent\.jsonl: collected with --concurrency 4") as caught:
        loaded_router, _ = train_router(read_log(concurrent), resamples=4)
    assert len([w for w in caught if w.category is ConcurrentLatencyWarning]) == 1
    assert loaded_router.trained_on["concurrency"] == 4  # the router file says so too
    assert router.trained_on["concurrency"] == 1
