"""bench/models.py (the README's model table): one JSON line per (model, size, objects) with the table's keys,
figures that follow from the model's config (parameters, memory tokens, memory per object), then the table."""

import json

import pytest

from bench import models as bench_models
from sam2_rt.modeling.config import get_config

pytestmark = pytest.mark.slow

KEYS = {"model", "image_size", "objects", "params_m", "weights_mb", "state_bytes_per_object",
        "memory_tokens_per_frame", "step_s", "fps", "device", "precision"}


def test_prints_a_line_per_setting_then_the_table(capsys: pytest.CaptureFixture) -> None:
    bench_models.main(["--models", "edgetam", "--image-sizes", "256", "--objects", "1", "2", "--frames", "1"])
    out = capsys.readouterr().out.splitlines()
    lines = [json.loads(line) for line in out if line.startswith("{")]
    assert [(line["model"], line["image_size"], line["objects"]) for line in lines] == [("edgetam", 256, 1),
                                                                                       ("edgetam", 256, 2)]
    config = get_config("edgetam", 256)
    for line in lines:
        assert set(line) == KEYS
        assert line["memory_tokens_per_frame"] == config.memory_tokens == 512
        assert line["fps"] == pytest.approx(1 / line["step_s"], rel=1e-2)  # the two columns agree
        # 14 M parameters (Meta's EdgeTAM); its memory: bf16 (512 x 64) tokens per stored frame, a few per object.
        assert 13 < line["params_m"] < 15
        slots_bytes = 2 * 512 * 64 * (1 + config.num_maskmem - 1)
        assert slots_bytes < line["state_bytes_per_object"] < 2 * slots_bytes * 4
    assert out[-len(lines) - 2].startswith("| model |") and out[-1].startswith("| edgetam | 256 | 2 |")


def test_unknown_model_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as error:
        bench_models.main(["--models", "sam3"])
    assert error.value.code == 2
