"""Loss modules against the functional losses and torch; training metadata checked against the model
when a checkpoint is loaded for inference; serve/inspect/feature maps for models of any structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference import assert_close

import convprop
from convprop import checkpoint, models, nn
from convprop.errors import CheckpointError, ContextError
from convprop.inference import Predictor

rng = np.random.default_rng(0)
LOGITS, LABELS, TARGETS = rng.standard_normal((4, 3)), rng.integers(0, 3, 4), rng.uniform(size=(4, 3))
PROBS = 1 / (1 + np.exp(-LOGITS))

LOSSES = [
    (lambda: nn.CrossEntropyLoss(label_smoothing=0.1), torch.nn.CrossEntropyLoss(label_smoothing=0.1), LOGITS, LABELS),
    (lambda: nn.CrossEntropyLoss(reduction="sum"), torch.nn.CrossEntropyLoss(reduction="sum"), LOGITS, LABELS),
    (nn.MSELoss, torch.nn.MSELoss(), LOGITS, TARGETS),
    (nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss(), LOGITS, TARGETS),
    (nn.BCELoss, torch.nn.BCELoss(), PROBS, TARGETS),
    (lambda: nn.MSELoss(reduction="none"), torch.nn.MSELoss(reduction="none"), LOGITS, TARGETS),
]  # fmt: skip


@pytest.mark.parametrize("make, theirs, x, target", LOSSES)
def test_loss_modules_match_torch_and_backward_is_per_call(make, theirs, x, target):
    criterion = make()
    loss = criterion(x, target)
    xt = torch.tensor(x, requires_grad=True)
    lt = theirs(xt, torch.tensor(target))
    g = np.full(np.shape(loss), 0.5)
    lt.backward(torch.tensor(g))
    assert_close(loss, lt.detach().numpy(), "loss")
    dx = criterion.backward(g) if np.ndim(loss) else criterion.backward() * 0.5
    assert_close(dx, xt.grad.numpy(), "gradient")
    _, context = criterion.forward_with_context(2 * x if make is not nn.BCELoss else x / 2, target)
    assert_close(criterion.backward(g) if np.ndim(loss) else criterion.backward() * 0.5, xt.grad.numpy(), "kept")
    assert criterion.backward_with_context(context, None).shape == x.shape  # the explicit pair is its own call


def test_loss_backward_needs_a_kept_call():
    criterion = nn.CrossEntropyLoss()
    with convprop.no_grad():
        criterion(LOGITS, LABELS)
    with pytest.raises(ContextError):
        criterion.backward()


def save(tmp_path, model, **meta):
    base = {"classes": json.dumps(list("0123456789")), "image_size": "[12, 12]",
            "normalization": json.dumps({"mean": [0.1], "std": [0.3]})}  # fmt: skip
    return checkpoint.save(model, tmp_path / "m.safetensors", metadata=base | meta)


BAD_METADATA = [
    ({"classes": json.dumps(["a", "b"])}, r"lists 2 names but the model has 10 outputs"),
    ({"classes": json.dumps({"a": 1})}, r"classes metadata must be a list of names"),
    ({"classes": json.dumps([[1]] * 10)}, r"classes metadata must be a list of names"),
    ({"normalization": json.dumps({"mean": [0.1], "std": [0.0]})}, r"std must be positive"),
    ({"normalization": '{"mean": [NaN], "std": [1.0]}'}, r"mean must be finite numbers"),
    ({"normalization": '{"mean": [0.1], "std": [Infinity]}'}, r"std must be finite numbers"),
    ({"image_size": "[100000, 100000]"}, r"image_size metadata must be \[H, W\] with sides in 1\.\.1024"),
    ({"image_size": '["a", 2]'}, r"image_size metadata must be"),
    ({"image_size": "[" * 100 + "]" * 100}, r"nested too deeply"),
    ({"image_size": "[2, 2]"}, r"does not take the \(2, 2\) images its metadata declares"),
]


@pytest.mark.parametrize("meta, message", BAD_METADATA)
def test_training_metadata_that_disagrees_with_the_model_is_refused(tmp_path, meta, message):
    path = save(tmp_path, models.lenet(1, (12, 12), 10, rng=0), **meta)
    with pytest.raises(CheckpointError, match=message):
        Predictor(path)


def test_a_residual_model_is_served_with_every_convolution_labelled_by_its_path(tmp_path):
    from convprop.serve import InferenceService

    model = models.resnet(1, (12, 12), 10, rng=0)
    predictor = Predictor(save(tmp_path, model))
    service = InferenceService(predictor)
    convs = [r["path"] for r in service.model_info["layers"] if r["type"] == "Conv2d"]
    assert convs == [n[: -len(".weight")] for n, p in model.named_parameters() if p.data.ndim == 4]
    answer = json.loads(service.predict({"pixels": np.zeros((12, 12)).tolist()}))
    labels = [m["label"] for m in answer["feature_maps"]]
    assert [label.split(" [")[1].split("]")[0] for label in labels] == convs
    assert labels[0] == "conv1 [0] + ReLU" and labels[2] == "conv3 [3.0.body.3]"


def test_a_model_without_convolution_is_served_without_filters(tmp_path):
    from convprop.serve import InferenceService

    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 10, rng=0))
    service = InferenceService(Predictor(save(tmp_path, model)))
    assert service.model_info["filters"] is None
    assert json.loads(service.predict({"pixels": np.zeros((12, 12)).tolist()}))["feature_maps"] == []


def test_summary_of_a_graph_names_each_layer_by_path():
    lin = nn.Linear(4, 4, rng=0)
    graph = nn.Graph(["x"], [("a", lin, ["x"]), ("t", nn.Tanh(), ["a"]), ("b", lin, ["t"])], ["b"])
    text = nn.summary(graph, (4,))
    assert [line.split()[0] for line in text.splitlines()[2:5]] == ["a", "t", "b"]
    assert "total parameters: 20" in text
