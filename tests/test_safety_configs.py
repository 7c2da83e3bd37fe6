"""Safety, class "configs": LakeConfig is validated in one place, for Python, --config, lake.json and
study configs alike; every error names the field; nothing is written on a bad config."""

from __future__ import annotations

import json
import math

import pytest

from lake_interp.cli import main
from lake_interp.lake import Lake, LakeConfig
from lake_interp.lake.config import MAX_SIGMA

TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]

BAD = [
    ("standardize", "false", "a boolean"),        # a string for a bool used to switch it on
    ("standardize", 1, "a boolean"),
    ("temperature", 0, "> 0"),
    ("temperature", -0.5, "> 0"),
    ("temperature", math.nan, "> 0"),
    ("temperature", math.inf, "> 0"),
    ("temperature", "0.07", "> 0"),
    ("normal_states", [], "non-empty list"),
    ("anomalous_states", "damaged {}", "not a str"),  # a string where a list of states is expected
    ("templates", ["a photo of a thing."], "'{}' placeholder"),
    ("templates", [3], "'{}' placeholder"),
    ("sigma", 1e6, f"[0, {MAX_SIGMA:g}]"),            # saved, then 32 GB at score time
    ("sigma", -1.0, "[0,"),
    ("sigma", math.nan, "[0,"),
    ("batch_size", 0, ">= 1"),
    ("batch_size", 2.5, "an integer"),
    ("k_neurons", True, "an integer"),
    ("k_neurons", 0, ">= 1"),
    ("seed", -1, ">= 0"),
    ("text_weight", 1.5, "[0, 1]"),
    ("text_weight", math.nan, "[0, 1]"),
    ("top_fraction", 0.0, "(0, 1]"),
    ("layers", [], "non-empty"),
    ("layers", [1.5], "relative depths"),
    ("layers", [True], "relative depths"),
    ("semantic_layers", "1.0", "not a str"),
    ("sites", "hook_resid_post", "not a str"),
    ("distance", "manhattan", "one of"),
    ("image_score", None, "one of"),
    ("criterion", 3, "a callable"),
]


class TestLakeConfigValidation:
    @pytest.mark.parametrize("field, value, expected", BAD)
    def test_python_refuses_with_the_field_named(self, field, value, expected):
        with pytest.raises(ValueError) as e:
            LakeConfig(**{field: value})
        assert f"LakeConfig.{field}" in str(e.value) and expected in str(e.value)
        with pytest.raises(ValueError, match=f"LakeConfig.{field}"):
            LakeConfig.from_dict({field: value})

    def test_defaults_and_round_trip(self):
        cfg = LakeConfig()
        assert LakeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert LakeConfig(text_weight=1, sigma=0).text_weight == 1.0  # JSON integers for real fields
        assert LakeConfig(layers=[2, -1, 0.5]).layers == (2, -1, 0.5)

    @pytest.mark.parametrize("field, value, expected", [b for b in BAD if isinstance(b[1], (str, int, float, list))
                                                          and not (isinstance(b[1], float) and not math.isfinite(b[1]))][:12])
    def test_cli_config_file_refuses_before_writing(self, tmp_path, capsys, field, value, expected):
        cfg = tmp_path / "cfg.json"
        cfg.write_text(json.dumps({field: value}))
        out = tmp_path / "det"
        assert main(["fit", "--normal", str(tmp_path), "--out", str(out), "--config", str(cfg), *TINY]) == 2
        err = capsys.readouterr().err
        assert f"--config {cfg}" in err and f"LakeConfig.{field}" in err
        assert not out.exists()

    def test_lake_json_config_is_validated_on_load(self, tiny_model, tmp_path):
        from lake_interp.data import MVTecAD, make_synthetic_dataset

        root = make_synthetic_dataset(tmp_path / "syn", categories=["disc"], seed=5, image_size=64, n_train=1,
                                      n_test_good=1, n_test_defect=1, defects=["hole"])
        det = tmp_path / "det"
        Lake(tiny_model, LakeConfig(k_neurons=4), "disc").fit(MVTecAD(root, "disc", "train").few_shot(1, 0)).save(det)
        meta = json.loads((det / "lake.json").read_text())
        meta["config"]["sigma"] = 1e9
        (det / "lake.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=r"lake\.json: field 'config': LakeConfig\.sigma=1000000000\.0"):
            Lake.load(det, tiny_model)

    def test_study_config_lake_fields_are_validated(self, tiny_model):
        from lake_interp.study import StudyConfig, check_study

        cfg = StudyConfig(model="lake-tiny", pretrained=None, categories=["disc"], shots=[1], seeds=[0], k_values=[4],
                          text_weights=[0.0], lake={"k_neurons": 4, "standardize": "yes"},
                          synthetic={"image_size": 64, "n_train": 2})
        with pytest.raises(ValueError, match=r"study config field 'lake'.*LakeConfig\.standardize='yes'"):
            check_study(tiny_model, cfg)
