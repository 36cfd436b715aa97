"""Router file format 2 (data, not code) and the out-of-domain gate."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from adaptive_ttc import ConfigurationError
from adaptive_ttc.demo import word_problems
from adaptive_ttc.router.domain import GateLimits
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import ROUTER_FORMAT, Router
from tests.unit_tests.router.test_router import GRID, synthetic_log

PROBLEMS = [p.question for p in word_problems()]
QUESTIONS = [f"Question {q}: apples pears boxes cars apples twice?" for q in range(3)] + [
    "Question 7: cars cars boxes pears apples integral?"
]


class _Planted:
    """Unpickling this writes a marker file: a loader that unpickles runs code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.marker), "code ran"))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def router() -> Router:
    profile = BackendProfile(
        "b", "m", request_overhead_s=0.1, prefill_tokens_per_s=500.0, decode_tokens_per_s={1: 20.0}
    )
    fitted = Router(GRID, profile=profile).fit(synthetic_log())
    fitted.meta = {
        "trained_on": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "temperature": 0.8},
        "spend_curve": {"fraction": [0.0, 0.5, 1.0], "share": [0.0, 0.4, 1.0]},
    }
    return fitted


def test_v2_round_trips_predictions_decisions_and_meta_exactly(router: Router, tmp_path: Path) -> None:
    path = tmp_path / "r.zip"
    router.save(path)
    loaded = Router.load(path)
    for question in QUESTIONS:
        assert loaded.predict(question) == router.predict(question)
        for lambdas in (Lambdas(), Lambdas(0.0, 0.0), Lambdas(1e-2, 0.0)):
            assert loaded.decide(question, lambdas=lambdas, max_tokens=64) == router.decide(
                question, lambdas=lambdas, max_tokens=64
            )
    assert loaded.meta == router.meta
    assert loaded.cost.profile == router.cost.profile
    assert loaded.training_temperature == 0.8
    assert loaded.training_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_v2_holds_json_and_plain_number_arrays_only(router: Router, tmp_path: Path) -> None:
    path = tmp_path / "r.zip"
    router.save(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["arrays.npz", "meta.json"]
        meta = json.loads(archive.read("meta.json"))
        archive.extract("arrays.npz", tmp_path)
    assert meta["format"] == ROUTER_FORMAT
    assert meta["version"] == 2
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as arrays:
        assert all(arrays[k].dtype.kind == "f" for k in arrays.files)


def _v1_file(path: Path, models: bytes, *, version: int = 1) -> Path:
    meta = {"format": ROUTER_FORMAT, "version": version, "grid": [c.label for c in GRID], "features": "text-256"}
    meta["lambdas"] = {"tokens": 1e-4, "latency": 1e-2}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("models.pkl", models)
    return path


def test_a_v1_file_whose_pickle_runs_code_is_rejected_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    payload = pickle.dumps({"accuracy": _Planted(marker)})
    pickle.loads(payload)  # the payload is live: unpickling it does write the marker
    assert marker.exists()
    marker.unlink()
    v1 = _v1_file(tmp_path / "v1.zip", payload)
    with pytest.raises(ConfigurationError, match=r"version 1.*never loads pickles.*adaptive-ttc train"):
        Router.load(v1)
    mislabelled = _v1_file(tmp_path / "v2-with-pickle.zip", payload, version=2)
    with pytest.raises(ConfigurationError, match="not a readable adaptive-ttc router file"):
        Router.load(mislabelled)
    assert not marker.exists()


def test_an_object_array_is_refused_not_unpickled(router: Router, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "r.zip"
    router.save(path)
    with zipfile.ZipFile(path) as archive:
        meta = archive.read("meta.json")
    planted = tmp_path / "planted.npz"
    np.savez(planted, prior=np.array([_Planted(marker)], dtype=object))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", meta)
        archive.writestr("arrays.npz", planted.read_bytes())
    with pytest.raises(ConfigurationError, match="router file"):
        Router.load(path)
    assert not marker.exists()


def test_check_model_warns_only_for_another_model(router: Router) -> None:
    assert router.check_model("SmolLM2-135M-Instruct") is None
    assert router.check_model("huggingfacetb/smollm2-135m-instruct") is None
    warning = router.check_model("Qwen2.5-1.5B-Instruct")
    assert warning is not None
    assert "SmolLM2-135M-Instruct" in warning
    assert "Qwen2.5-1.5B-Instruct" in warning


def test_sampling_temperature_defaults_to_the_training_one(router: Router) -> None:
    assert router.temperature_for(None) == 0.8
    assert router.temperature_for(0.3) == 0.3
    assert Router(GRID).temperature_for(None, default=0.7) == 0.7


def test_in_domain_questions_pass_the_gate(router: Router) -> None:
    held_out = {o.question for o in synthetic_log(questions=60, seed=7)}
    passed = [router.out_of_domain(q) is None for q in held_out]
    assert sum(passed) / len(passed) >= 0.95
    decision = router.decide(next(iter(held_out)))
    assert decision is not None
    assert decision.reason == "utility"


def test_the_demo_word_problems_fall_back_to_the_prior_and_say_why(router: Router) -> None:
    question = PROBLEMS[0]
    why = router.out_of_domain(question)
    assert why is not None
    decision = router.decide(question, lambdas=Lambdas(0.0, 0.0))
    assert decision is not None
    assert decision.reason == "out_of_domain"
    assert decision.detail == why
    assert decision.to_dict()["detail"] == why
    assert router.prior is not None
    # At zero prices the prior picks the configuration with the best mean training accuracy.
    best = int(np.argmax(router.prior.accuracy))
    assert decision.configuration == GRID[best]
    assert [p.accuracy for p in decision.predictions] == router.prior.accuracy


def test_a_long_prompt_fails_the_length_check_with_its_numbers(router: Router) -> None:
    long = "Question 1: " + "apples pears boxes cars " * 200 + "?"
    why = router.out_of_domain(long)
    assert why is not None
    assert "sd from the training mean" in why or "outside the training range" in why


def test_the_fallback_target_is_a_parameter(tmp_path: Path) -> None:
    fitted = Router(GRID, fallback="bon-majority-4").fit(synthetic_log())
    decision = fitted.decide(PROBLEMS[1], lambdas=Lambdas(0.0, 0.0))
    assert decision is not None
    assert (decision.configuration.label, decision.reason) == ("bon-majority-4", "out_of_domain")
    fitted.save(tmp_path / "r.zip")
    assert Router.load(tmp_path / "r.zip").fallback == "bon-majority-4"
    # A fallback that does not fit the call's room gives way to the prior's choice among what fits.
    squeezed = fitted.decide(PROBLEMS[1], lambdas=Lambdas(0.0, 0.0), token_room=60.0)
    assert squeezed is None or squeezed.configuration.label != "bon-majority-4"
    with pytest.raises(ConfigurationError, match="neither in the grid"):
        Router(GRID, fallback="bon-sometimes-16")


def test_gate_limits_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="gate limits"):
        GateLimits(z_limit=0.0)
    with pytest.raises(ConfigurationError, match="gate limits"):
        GateLimits(unseen_limit=1.5)


def test_make_features_knows_the_hidden_state_extractor_without_loading_it() -> None:
    from adaptive_ttc.router.features import make_features

    assert make_features("hidden-packaged").name == "hidden-packaged"
    assert make_features("hidden-packaged--1").name == "hidden-packaged--1"
    with pytest.raises(ConfigurationError, match="hidden-packaged"):
        make_features("hidden-qwen")


def test_the_packaged_router_gates_the_demo_problems_and_passes_its_held_out_questions() -> None:
    from adaptive_ttc.eval.log import read_log
    from adaptive_ttc.router.default import default_router_path

    packaged = Router.load(default_router_path())
    assert packaged.training_model == "SmolLM2-135M-Instruct"
    assert packaged.training_temperature == 0.8
    assert all(packaged.out_of_domain(question) is not None for question in PROBLEMS)
    log = read_log(Path(__file__).parents[3] / "benchmarks" / "logs" / "mixed_smollm2.jsonl.gz")
    texts = {row["id"]: row["question"] for row in log.rows}
    held_out = packaged.meta["split"]["test_ids"]
    inside = [packaged.out_of_domain(texts[q]) is None for q in held_out]
    assert len(inside) == 84
    assert sum(inside) / len(inside) >= 0.95
