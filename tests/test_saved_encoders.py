"""Each scored seed keeps its trained encoder, and `load_encoder` gives back, from the seed's record alone, the
very model its probe scored; a file that is not the record's is refused in one line."""

import json
import pickle
from pathlib import Path

import mlflow
import pytest
import torch

from harness.api.errors import HarnessError
from harness.cli import main
from harness.results.records import read_record
from harness.running import saved_encoders
from harness.running.saved_encoders import encoder_path, load_encoder
from methods.clip import CLIP
from tests.fixtures import TinySynthetic

SEEDS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `harness run` of CLIP with two seeds; each seed's trained method as the run held it when it saved it."""
    root = tmp_path_factory.mktemp("saved-encoders")
    kept = {}
    save = saved_encoders.save_encoder

    def saving(workdir, method, identity, seed, hparams, run_id):
        kept[seed] = method
        return save(workdir, method, identity, seed, hparams, run_id)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(saved_encoders, "save_encoder", saving)
        assert main(["run", "--method", "clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", str(SEEDS),
                     "--results", str(root / "results"), "--workdir", str(root / "work"), "--tracking-uri", uri,
                     "--no-progress", "--allow-dirty"]) == 0
    records = {seed: root / "results" / "records" / "tiny-synthetic" / "clip" / f"seed{seed}.json"
               for seed in range(SEEDS)}
    return {"root": root, "work": root / "work", "uri": uri, "records": records, "methods": kept}


def test_a_loaded_encoder_is_the_model_the_probe_scored(trained):
    inputs, _labels, _rows = next(TinySynthetic().load().test.batches(64))
    loaded = {}
    for seed, record in trained["records"].items():
        encoder = load_encoder(record, trained["work"])
        in_run = trained["methods"][seed]
        state = in_run.state_dict()
        assert encoder.method.state_dict().keys() == state.keys()
        assert all(torch.equal(value, state[key]) for key, value in encoder.method.state_dict().items())
        in_run.eval()
        with torch.no_grad():  # computed side by side now, so the thread count is the same for both
            expected = in_run.encode({name: inputs[name] for name in in_run.input_modalities(in_run.task).probe})
        assert torch.equal(encoder.encode(inputs), expected)
        loaded[seed] = encoder.encode(inputs)
    assert not torch.equal(loaded[0], loaded[1])  # each record finds its own seed's encoder


def test_the_copy_in_the_seed_s_mlflow_run_loads_too(trained, tmp_path):
    record = read_record(trained["records"][1])
    client = mlflow.MlflowClient(trained["uri"])
    (artifact,) = client.list_artifacts(record.mlflow_run_id, saved_encoders.ARTIFACT_PATH)
    copy = Path(client.download_artifacts(record.mlflow_run_id, artifact.path, str(tmp_path)))
    assert copy.name == encoder_path(trained["work"], record.identity, 1).name
    elsewhere = load_encoder(trained["records"][1], tmp_path / "no-work-folder", weights=copy)
    here = load_encoder(trained["records"][1], trained["work"])
    assert all(torch.equal(value, here.method.state_dict()[key])
               for key, value in elsewhere.method.state_dict().items())


def refused(*args, **kwargs) -> str:
    with pytest.raises(HarnessError) as caught:
        load_encoder(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def altered(record: Path, tmp_path: Path, change) -> Path:
    data = json.loads(record.read_text())
    change(data)
    path = tmp_path / record.name
    path.write_text(json.dumps(data))
    return path


def test_a_work_folder_without_the_encoder_names_the_fix(trained, tmp_path):
    message = refused(trained["records"][0], tmp_path)
    assert "no saved encoder" in message and "work folder" in message and "--force" in message


def test_a_file_saved_for_another_configuration_or_training_is_refused(trained, tmp_path):
    record = trained["records"][0]
    original = encoder_path(trained["work"], read_record(record).identity, 0)

    def epochs(data):
        data["identity"]["protocol"]["epochs"] = 3

    other = altered(record, tmp_path, epochs)
    assert "no saved encoder" in refused(other, trained["work"])  # another identity: another file name
    message = refused(other, trained["work"], weights=original)  # that file forced on it all the same
    assert "the encoder has 1 epochs, the record 3 epochs" in message and "--force" in message

    def run_id(data):
        data["mlflow_run_id"] = "0" * 32

    message = refused(altered(record, tmp_path, run_id), trained["work"])
    assert "another training" in message and "0" * 32 in message
    message = refused(record, trained["work"], weights=encoder_path(trained["work"], read_record(record).identity, 1))
    assert "saved for seed 1, the record's is 0" in message


def test_a_damaged_or_hostile_file_is_refused_unrun(trained, tmp_path):
    record = trained["records"][0]
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(encoder_path(trained["work"], read_record(record).identity, 0).read_bytes()[:1000])
    assert "cannot read this encoder file" in refused(record, weights=damaged)

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps(Payload(), protocol=2))
    assert "cannot read this encoder file" in refused(record, weights=hostile)
    assert not marker.exists()


def test_a_method_version_other_than_the_encoder_s_is_refused(trained, monkeypatch):
    monkeypatch.setattr(CLIP, "version", "99")  # the code here changed the method since the encoder was saved
    message = refused(trained["records"][0], trained["work"])
    assert "method clip is version 99 here, the encoder's is 2" in message
