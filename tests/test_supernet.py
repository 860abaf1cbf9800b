"""Supernet extraction: sliced sub-networks, shared storage, every (stacks, ratio)."""

from __future__ import annotations

import itertools

import pytest
import torch

import mlpgraph
from distill.config import StudentConfig
from distill.errors import ConfigError
from distill.student import Student
from distill.supernet import Supernet, extract, pool_assignment

H = 24
BASE = StudentConfig(vocab_size=50, hidden=H, heads=4, max_position=12, num_labels=3,
                     layers=[("W2(gelu(W1(x)))", 1, H)] * 2)
SPECS = [("tanh(W2(gelu(W1(x))))", 3, 12), ("W2(relu(W1(x) * x))", 2, 8)]


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    return Supernet(BASE, seed=0).eval()


def batch():
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask


def copied_by_hand(net: Supernet, specs) -> Student:
    """A fresh student whose weights are copied from the supernet by explicit slicing."""
    student = Student(net.config.replace(layers=specs), seed=123).eval()
    big = net.state_dict()
    own = student.state_dict()
    for key in own:
        src = big["model." + key]
        if ".mlp.units." in key:  # ...units.{s}.fn.{W}.{weight|bias}
            name, kind = key.split(".")[-2:]
            out, inp = own[key].shape[0], own[key].shape[1] if own[key].dim() == 2 else None
            src = src[:out, :inp] if kind == "weight" else src[:out]
            assert name in ("W1", "W2")
        own[key] = src.clone()
    student.load_state_dict(own)
    return student


def test_sliced_subnetwork_equals_copied_weights(supernet):
    ids, mask = batch()
    reference = copied_by_hand(supernet, SPECS)(ids, mask)
    for mode in ("view", "copy"):
        out = extract(supernet, SPECS, mode=mode)(ids, mask)
        torch.testing.assert_close(out.logits, reference.logits, rtol=0, atol=0)
        for a, b in zip(out.hidden_states, reference.hidden_states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    w1 = extract(supernet, SPECS).layers[0].mlp.units[2].weights()["W1"][0]
    torch.testing.assert_close(w1, supernet.model.layers[0].mlp.units[2].fn.W1.weight[:12])
    w2 = extract(supernet, SPECS).layers[1].mlp.units[1].weights()["W2"][0]
    torch.testing.assert_close(w2, supernet.model.layers[1].mlp.units[1].fn.W2.weight[:, :8])


def test_layers_and_candidates_extract_alike(supernet):
    """MLPLayer objects, (graph, s, k) tuples and candidates holding either cut the same net."""
    from collections import namedtuple

    from distill.scoring import candidate_specs

    layers = [mlpgraph.MLPLayer.of(e, s, f"{k}/{H}") for e, s, k in SPECS]
    Choice = namedtuple("Choice", "graph stacks d_inner")  # the searcher's former layer tuple
    Spec = namedtuple("Spec", "candidate_id hidden layers")
    old = Spec("c", H, tuple(Choice(mlpgraph.parse(e), s, k) for e, s, k in SPECS))
    assert candidate_specs(old) == candidate_specs(layers) == candidate_specs(SPECS, H) == layers
    with pytest.raises(ConfigError, match="model width"):
        candidate_specs(SPECS)
    ids, mask = batch()
    by_tuple = extract(supernet, SPECS)
    assert by_tuple.config.layers == layers
    assert torch.equal(extract(supernet, layers)(ids, mask).logits, by_tuple(ids, mask).logits)


def test_view_mode_shares_storage_and_gradients():
    net = Supernet(BASE, seed=1).train()
    view = net.extract(SPECS, mode="view")
    copy = net.extract(SPECS, mode="copy")
    big = net.model.layers[0].mlp.units[1].fn.W1.weight
    small = view.layers[0].mlp.units[1].weights()["W1"][0]
    assert small.data_ptr() == big.data_ptr() and small.shape == (12, H)
    assert view.embeddings is net.model.embeddings
    assert view.layers[1].attention is net.model.layers[1].attention
    assert copy.embeddings.word.weight.data_ptr() != net.model.embeddings.word.weight.data_ptr()
    assert not any(p.data_ptr() == big.data_ptr() for p in copy.parameters())
    ids, mask = batch()
    view(ids, mask).logits.sum().backward()
    grad = big.grad
    assert grad is not None and grad[:12].abs().sum() > 0 and bool((grad[12:] == 0).all())
    assert net.model.layers[0].mlp.units[3].fn.W1.weight.grad is None  # stack 4 unused
    view.eval(), copy.eval()
    before_v, before_c = view(ids, mask).logits, copy(ids, mask).logits
    with torch.no_grad():
        big.mul_(2.0)
    assert not torch.equal(view(ids, mask).logits, before_v)  # reads the live weights
    assert torch.equal(copy(ids, mask).logits, before_c)  # independent


@pytest.mark.parametrize(("stacks", "ratio"), list(itertools.product(range(1, 5), (1, 2, 3, 4))))
def test_every_stack_count_and_ratio(supernet, stacks, ratio):
    k = H // ratio
    specs = [("W2(gelu(W1(x)))", stacks, k), ("sigmoid(W2(relu(W1(x))))", 5 - stacks, k)]
    ids, mask = batch()
    view = extract(supernet, specs, mode="view")
    copy = extract(supernet, specs, mode="copy")
    assert [len(layer.mlp.units) for layer in copy.layers] == [stacks, 5 - stacks]
    assert copy.num_parameters() == sum(p.numel() for p in copy.parameters())
    assert view.num_parameters() == copy.num_parameters()
    assert set(view.state_dict()) == set(copy.state_dict())
    assert torch.equal(view(ids, mask).logits, copy(ids, mask).logits)


def test_glu_pools_follow_roles():
    net = Supernet(BASE, seed=2).eval()
    glu = "W3(silu(W1(x)) * W2(x))"
    assert pool_assignment(mlpgraph.parse(glu)) == {"W1": "W1", "W2": "extra", "W3": "W2"}
    student = net.extract([(glu, 2, 6), ("W2(gelu(W1(x)) * W3(x))", 1, 12)], mode="view")
    assert sorted(net.extra) == ["l0_s0_W2", "l0_s1_W2", "l1_s0_W3"]
    unit = student.layers[0].mlp.units[0]
    w = unit.weights()
    big = net.model.layers[0].mlp.units[0].fn
    torch.testing.assert_close(w["W3"][0], big.W2.weight[:, :6])  # output projection
    torch.testing.assert_close(w["W2"][0], big.W1.weight[:6])  # gate pool starts as W1
    assert w["W2"][0].data_ptr() == net.extra["l0_s0_W2"].weight.data_ptr()
    created = net.add_pools([mlpgraph.parse(glu)])
    assert len(created) == 2 * 4 - 2  # every (layer, stack) now has a W2 gate pool
    with pytest.raises(TypeError, match="mlpgraph.parse"):
        net.add_pools([glu])  # graphs, not text, cross into the supernet
    ids, mask = batch()
    copy = net.extract([(glu, 2, 6), ("W2(gelu(W1(x)) * W3(x))", 1, 12)], mode="copy")
    assert torch.equal(student(ids, mask).logits, copy(ids, mask).logits)


def test_supernet_save_load_and_view_export(tmp_path):
    net = Supernet(BASE, seed=3).eval()
    specs = [("W2(gelu(W1(x)) * W3(x))", 2, 8), ("elu(W2(gelu(W1(x))))", 4, 24)]
    view = net.extract(specs, mode="view")
    net.save_pretrained(tmp_path / "sn")
    again = Supernet.from_pretrained(tmp_path / "sn").eval()
    ids, mask = batch()
    assert torch.equal(net(ids, mask).logits, again(ids, mask).logits)
    assert torch.equal(again.extract(specs, mode="view")(ids, mask).logits,
                       view(ids, mask).logits)
    view.save_pretrained(tmp_path / "student")  # the view exports its slices
    student = Student.from_pretrained(tmp_path / "student").eval()
    assert torch.equal(student(ids, mask).logits, view(ids, mask).logits)


@pytest.mark.parametrize(("specs", "field"), [
    ([("W2(gelu(W1(x)))", 5, 12)] * 2, "layer_specs[0].stacks"),
    ([("W2(gelu(W1(x)))", 1, 12), ("W2(gelu(W1(x)))", 1, 25)], "layer_specs[1].d_inner"),
    ([("W2(gelu(W1(x)))", 1, 12)], "layer_specs"),
    ([("W2(gelu(W1(x)))", 1, 12), ("W2(gelu(W1(", 1, 12)], "layers[1].expr"),
])
def test_extraction_errors(supernet, specs, field):
    with pytest.raises(ConfigError) as info:
        extract(supernet, specs)
    assert info.value.field == field
    with pytest.raises(ValueError, match="mode"):
        extract(supernet, SPECS, mode="borrow")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("backend", ["export", "torchscript"])
def test_view_mode_on_compiled_backends(backend):
    """A view runs the compiled artifact on borrowed blocks: as eager, gradients included."""
    net = Supernet(BASE, seed=4).eval()
    specs = [("W2(gelu(W1(x)) * W3(x))", 2, 8), ("elu(W2(gelu(W1(x))))", 1, 12)]
    ids, mask = batch()
    eager = net.extract(specs, mode="view")(ids, mask).logits
    view = net.extract(specs, mode="view", backend=backend)
    unit = view.layers[0].mlp.units[1]
    assert unit.fn.backend == backend and unit.borrowed and not list(unit.parameters())
    torch.testing.assert_close(view(ids, mask).logits, eager, rtol=1e-5, atol=1e-6)
    view(ids, mask).logits.sum().backward()
    gate = net.extra["l0_s1_W3"].weight.grad
    assert gate is not None and gate[:8].abs().sum() > 0 and bool((gate[8:] == 0).all())
    w2 = net.model.layers[1].mlp.units[0].fn.W2.weight.grad
    assert w2[:, :12].abs().sum() > 0 and bool((w2[:, 12:] == 0).all())
