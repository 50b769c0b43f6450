"""`flux-nb generate`: the README's main job, run as a real subprocess on the embedded default."""

import json
import os
import subprocess
import sys

from flux_nb.metadata import read_metadata


def run_cli(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FLUX_NB_"))}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "flux_nb.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_generate_saves_images_with_metadata_and_prints_json(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("generate", "a red fox in snow", "--seed", "7", "-n", "2", "--out", str(out),
                   env_extra={"FLUX_NB_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seed"] == 7 and summary["backend"] == "embedded" and len(summary["images"]) == 2
    assert "embedded local server" in proc.stderr and proc.stderr.count("\n") <= 2
    for image in summary["images"]:
        request = read_metadata(image["path"])
        assert request.prompt == "a red fox in snow" and request.seed == 7 and request.num_images == 2
    # the data folder got its own copy before anything was shown
    assert any((tmp_path / "data").rglob("*.jp*g"))


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    proc = run_cli("generate", "x", "--steps", "99", "--out", str(tmp_path), env_extra={"FLUX_NB_DATA_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert "num_inference_steps=99" in proc.stderr and "Traceback" not in proc.stderr
