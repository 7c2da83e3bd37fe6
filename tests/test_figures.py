"""`lake-interp figures` on the synthetic dataset with the tiny model writes every promised file."""

import csv
import json

from lake_interp.cli import main

FIGURES = ["fig1_selected_vs_random", "fig2_metrics_vs_k", "fig3_neuron_depth", "fig4_top_patches",
           "fig5_ablation_maps", "fig6_text_weight", "fig7_neuron_words", "fig8_attribution_vs_ablation",
           "fig9_neuron_stability"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_figures_command_writes_every_file_and_number(tmp_path):
    config = {"model": "lake-tiny", "pretrained": None, "categories": ["disc"], "shots": [1, 2], "seeds": [0, 1],
              "k_values": [4, 16], "text_weights": [0.0, 1.0], "lake": {"k_neurons": 8}, "n_top_neurons": 3,
              "n_examples": 2, "synthetic": {"image_size": 64, "n_train": 4, "n_test_good": 2, "n_test_defect": 1}}
    (tmp_path / "study.json").write_text(json.dumps(config))
    out = tmp_path / "figs"
    assert main(["figures", "--config", str(tmp_path / "study.json"), "--out", str(out), "--device", "cpu"]) == 0
    for name in FIGURES:
        for ext in ("png", "svg", "pdf", "html", "caption.txt"):
            assert (out / f"{name}.{ext}").stat().st_size > 100, f"{name}.{ext}"
        assert (out / f"{name}.csv").is_file() or (out / f"{name}.json").is_file()
        assert "lake-tiny" in (out / f"{name}.caption.txt").read_text()
        assert "RANDOM WEIGHTS" in (out / f"{name}.caption.txt").read_text()
    assert (out / "README.md").read_text().count("## fig") == len(FIGURES)
    assert json.loads((out / "study_config.json").read_text())["seeds"] == [0, 1]

    # the numbers behind the figures
    fig1 = rows(out / "fig1_selected_vs_random.csv")
    from lake_interp.detectors.methods import default_methods

    assert json.loads((out / "study_config.json").read_text())["methods"] == default_methods()  # the table's
    assert [r["method"] for r in fig1[: len(default_methods())]] == default_methods()
    assert len(fig1) == len(default_methods()) * 2 * 2  # methods x shots x seeds
    assert fig1 == rows(out / "benchmark" / "results.csv")
    assert all(0 <= float(r["image_auroc"]) <= 1 for r in fig1)
    fig2 = rows(out / "fig2_metrics_vs_k.csv")
    assert {(r["value"], r["condition"]) for r in fig2} == {("4", "selected"), ("4", "random"), ("16", "selected"), ("16", "random")}
    depth = json.loads((out / "fig3_neuron_depth.json").read_text())
    assert sum(depth["counts"].values()) == depth["k"] == 8 * 4
    fig4 = rows(out / "fig4_top_patches.csv")
    assert len(fig4) == 3 * 8 and all((out / "data" / r["image"]).is_file() for r in fig4)
    fig5 = json.loads((out / "fig5_ablation_maps.json").read_text())
    assert len(fig5["images"]) == 2 and all(r["clean_score"] != r["ablated_score"] for r in fig5["images"])
    assert all(r["random_ablated_score"] is not None for r in fig5["images"])
    assert fig5["meta"]["readout"] == "downstream" and fig5["meta"]["mode"] == "zero"
    assert len(fig5["random_delta"]) == fig5["meta"]["n_random"] == len(fig5["random_units"]) == 5
    deltas = [r["image_auroc"] for r in fig5["random_delta"]]  # the spread, against numpy
    assert fig5["random_summary"]["image_auroc"]["mean"] == __import__("pytest").approx(sum(deltas) / len(deltas))
    assert "random" in (out / "fig5_ablation_maps.caption.txt").read_text()
    fig7 = rows(out / "fig7_neuron_words.csv")
    from lake_interp.interp.words import VOCABULARY

    assert len(fig7) == 3 * len(VOCABULARY) and all(-1 <= float(r["cosine"]) <= 1 for r in fig7)
    fig8 = rows(out / "fig8_attribution_vs_ablation.csv")
    assert len(fig8) >= 10 and all(r["hook"].startswith("visual.blocks.") for r in fig8)
    assert "Spearman" in (out / "fig8_attribution_vs_ablation.caption.txt").read_text()
    stability = json.loads((out / "fig9_neuron_stability.json").read_text())
    assert stability["draws"] == [[1, 0], [1, 1], [2, 0], [2, 1]] or len(stability["draws"]) == 4
