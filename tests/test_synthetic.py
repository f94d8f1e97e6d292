import math
from dataclasses import replace

import numpy as np

from tasks.synthetic import Synthetic


def test_the_paper_setting_has_the_notebook_split_sizes_and_balanced_labels():
    data = Synthetic().load()
    assert (len(data.train), len(data.val), len(data.test)) == (24000, 3000, 6000)
    assert data.train.inputs["x1"].shape == (24000, 100)
    assert set(data.train.extras) == {"shared", "unique1", "unique2"}
    # The latents are symmetric about 0, so P(label 1) = 1/2: binomial over the 24000 training rows,
    # within 4 sd, 4 sqrt(1/4 / 24000) = 0.013, of 1/2.
    assert abs(data.train.labels.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 24000)


def test_the_data_are_the_same_every_time():
    assert Synthetic().load().fingerprint() == Synthetic().load().fingerprint()


def test_inputs_are_the_stated_linear_maps_of_the_latents():
    data = Synthetic().load().train
    latents = np.c_[data.extras["shared"].numpy(), data.extras["unique1"].numpy()]
    x1 = data.inputs["x1"].numpy()
    solution, *_ = np.linalg.lstsq(latents, x1, rcond=None)
    # x1 = [w_s, w_1] T_1 exactly, up to float32 rounding of x1 (|x1| < 9) and of the 16 latents it sums
    # (|w| < 3.4, T_1 < 1): eps32 (9 + 16 x 3.4) = 7.5e-6 < 1e-5, with no relative slack beside it.
    assert np.allclose(latents @ solution, x1, rtol=0, atol=1e-5)
    # T_1 entries drawn from [0, 1); least squares over 24000 rows recovers them to the residual's rms
    # (~1e-6) over sqrt(24000) x sd(w) (110): ~1e-8, so 1e-6 allows a hundredfold.
    assert ((solution > -1e-6) & (solution < 1 + 1e-6)).all()


def test_the_label_reads_only_the_chosen_latents():
    class SharedOnly(Synthetic):
        setting = replace(Synthetic.setting, label_reads=("shared",))

    data = SharedOnly().load().train
    expected = (data.extras["shared"].mean(dim=1) >= 0).long()
    assert (data.labels == expected).all()
