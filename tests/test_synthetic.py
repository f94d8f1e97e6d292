from dataclasses import replace

import numpy as np

from tasks.synthetic import Synthetic


def test_the_paper_setting_has_the_notebook_split_sizes_and_balanced_labels():
    data = Synthetic().load()
    assert (len(data.train), len(data.val), len(data.test)) == (24000, 3000, 6000)
    assert data.train.inputs["x1"].shape == (24000, 100)
    assert set(data.train.extras) == {"shared", "unique1", "unique2"}
    assert 0.45 < data.train.labels.float().mean() < 0.55


def test_the_data_are_the_same_every_time():
    assert Synthetic().load().fingerprint() == Synthetic().load().fingerprint()


def test_inputs_are_the_stated_linear_maps_of_the_latents():
    data = Synthetic().load().train
    latents = np.c_[data.extras["shared"].numpy(), data.extras["unique1"].numpy()]
    x1 = data.inputs["x1"].numpy()
    solution, *_ = np.linalg.lstsq(latents, x1, rcond=None)
    assert np.allclose(latents @ solution, x1, atol=1e-3)  # x1 = [w_s, w_1] T_1 exactly
    assert ((solution > -1e-3) & (solution < 1 + 1e-3)).all()  # T_1 entries drawn from [0, 1)


def test_the_label_reads_only_the_chosen_latents():
    class SharedOnly(Synthetic):
        setting = replace(Synthetic.setting, label_reads=("shared",))

    data = SharedOnly().load().train
    expected = (data.extras["shared"].mean(dim=1) >= 0).long()
    assert (data.labels == expected).all()
