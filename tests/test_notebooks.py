"""Every notebook runs headless (nbclient) on the tiny offline model and the synthetic dataset."""

from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lake_interp.data import make_synthetic_dataset

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

TINY = {
    "01_quickstart": 'MODEL = "lake-tiny"\nPRETRAINED = None\nDATASET = "mvtec"\nROOT = {root!r}\nCATEGORY = "disc"\nSHOTS = 2\nSEED = 0\nK_NEURONS = 8\n',
    "02_neuron_explorer": 'MODEL = "lake-tiny"\nPRETRAINED = None\nDATASET = "mvtec"\nROOT = {root!r}\nCATEGORY = "disc"\nSHOTS = 2\nSEED = 0\nK_NEURONS = 4\nSTATIC = None\n',
    "03_ablation_study": 'MODEL = "lake-tiny"\nPRETRAINED = None\nDATASET = "mvtec"\nROOT = {root!r}\nCATEGORY = "disc"\nSHOTS = 2\nSEED = 0\nK_NEURONS = 8\nN_RANDOM = 2\n',
    "04_paper_figures": ('MODEL = "lake-tiny"\nPRETRAINED = None\nDATASET = "mvtec"\nROOT = {root!r}\nCATEGORIES = ["disc"]\n'
                         'SHOTS = [1, 2]\nSEEDS = [0, 1]\nK_VALUES = [4, 8]\nTEXT_WEIGHTS = [0.0, 1.0]\nLAKE = {{"k_neurons": 8}}\n'
                         'SYNTHETIC = {{}}\nOUT = {out!r}\n'),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("nbdata"), categories=["disc"], seed=0, image_size=64,
                                  n_train=4, n_test_good=2, n_test_defect=1)


def test_every_notebook_has_a_test_config():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(TINY)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, root, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "one parameter cell, tagged 'parameters'"
    params[0].source = TINY[path.stem].format(root=str(root), out=str(tmp_path / "figs"))
    # cells take seconds here; jupyter_client sometimes leaves an execute_reply unread until the
    # poll's timeout (seen after the explorer's widget cell), so a long timeout only costs time
    timeout = 120
    NotebookClient(nb, timeout=timeout, kernel_name="python3", raise_on_iopub_timeout=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in nb.cells:  # nbclient can run past a hung cell's timeout without raising: catch it here
        if cell.cell_type == "code":
            t = cell.metadata["execution"]
            start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00")) for k in ("iopub.status.busy", "iopub.status.idle"))
            assert (end - start).total_seconds() < 0.9 * timeout, f"cell hung: {cell.source[:80]}"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if path.stem == "04_paper_figures":
        from lake_interp.study import FIGURE_NAMES

        assert sorted(p.stem for p in (tmp_path / "figs").glob("fig*.png")) == sorted(FIGURE_NAMES)
