"""The wanserve-operator command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.cli import main


def test_local_mode_refuses_a_bad_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("spec:\n  failover:\n    consecutiveFailures: 0\n")
    assert main(["local", "--policy-file", str(path), "--metrics-port", "0"]) == 2
    assert "failover.consecutiveFailures" in capsys.readouterr().err


def test_a_mode_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "local" in capsys.readouterr().err
