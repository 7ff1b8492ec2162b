"""benchmarks/real_sizes.py: the meta-device Qwen2-VL-2B/7B have their published sizes, the default adapter is
what the LoRA settings say it is, the estimate reads the model's real bytes; the GPU code path runs on CPU
with a tiny model (--smoke, slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("real_sizes", ROOT / "benchmarks" / "real_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_sizes_cpu_part_counts_and_estimates(tmp_path):
    bench = _bench()
    args = bench.parse_args(["--out", str(tmp_path / "r.json")])
    result = bench.cpu_part(args)
    for size, text in (("2b", bench.TEXT["2b"]), ("7b", bench.TEXT["7b"])):
        got = result[size]
        assert abs(got["total_over_published"] - 1) < 0.005, size  # 2.21B / 8.29B on the model cards
        groups = got["parameters"]
        assert groups["total"] == groups["language_model"] + groups["vision_tower"] + groups["projector"]
        h, i, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
        kv = text["num_key_value_heads"] * h // text["num_attention_heads"]
        per_layer = 8 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))  # r=8: q, k, v, o, gate, up, down
        adapter = got["adapter"]
        assert adapter["lora_params"] == layers * per_layer and adapter["lora_targets"] == 7 * layers
        assert adapter["projector_params"] == groups["projector"] and adapter["projector_module"].endswith("merger")
        assert adapter["adapter_mb"] == pytest.approx((4 * adapter["lora_params"] + 2 * groups["projector"]) / 1e6)
        plain, ckpt = got["memory"]
        assert plain["weight_terms_over_meta_parameter_bytes"] == 1.0
        assert ckpt["estimate_bytes"]["activations"] < plain["estimate_bytes"]["activations"] / 5
        assert plain["estimate_bytes"]["weights"] > 0.98 * 2 * groups["total"]  # bf16
    assert result["7b"]["memory"][0]["estimate_gib"] > result["2b"]["memory"][0]["estimate_gib"]


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_runs_the_gpu_part_on_cpu(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_sizes.py"), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    smoke = json.loads(out.read_text())["smoke"]["smoke"]
    for trainer in ("ours", "transformers_trainer", "trl_sft_trainer"):
        assert smoke[trainer]["samples_per_s"] > 0 and smoke[trainer]["steps"] == 2, trainer
    assert smoke["ours"]["placement_estimate_gb"] > 0
    scores = smoke["evaluation_and_scoring"]
    assert scores["batch_2_samples_per_s"] > 0 and scores["perturbation_score_seconds_per_1k"] > 0
