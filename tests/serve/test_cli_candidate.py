"""`wanserve serve --candidate DIR`: a candidate beside the stable version, and the local canary spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from operators.spec import parse_spec
from serve.cli import LOCAL_CANARY, build_parser, main


def test_a_candidate_that_is_not_a_wan_checkpoint_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--candidate", str(tmp_path), "--no-operator"]) == 2
    err = capsys.readouterr().err
    assert f"--candidate {tmp_path}" in err and "model_index.json" in err


def test_the_local_canary_spec_is_one_the_operator_accepts() -> None:
    spec = parse_spec(yaml.safe_load("rollout:\n  stableVersion: wan2.2-ti2v-5b\n" + LOCAL_CANARY.format(name="cand")))
    assert (spec.rollout.candidate_version, spec.rollout.steps) == ("cand", (10.0, 50.0, 100.0))


def test_serve_takes_a_candidate_its_name_and_a_backup() -> None:
    args = build_parser().parse_args(["serve", "--candidate", "tiny", "--candidate-version", "ft1", "--backup"])
    assert (args.candidate, args.candidate_version, args.backup) == ("tiny", "ft1", True)
