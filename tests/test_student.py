"""The student encoder: shapes, parameter counts, stacking, attention scores, files, configs."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch

import mlpgraph
from distill.config import StudentConfig, as_layer, available_configs, load_config, student_schema
from distill.errors import CheckpointError, ConfigError
from distill.student import GraphMLP, Student, count_parameters

PAPER = [
    ("tanh(W2(gelu(W1(x))))", 4, 270), ("elu(W2(gelu(W1(x))))", 2, 540),
    ("sigmoid(W2(relu(W1(x))))", 1, 270), ("W2(gelu(W1(max(x, tanh(x)))))", 2, 270),
    ("W2(relu(W1(x) * x))", 1, 270), ("leaky_relu(W2(gelu(W1(x))))", 2, 180),
]
PAPER_SMALL = [(e, s, k // 45) for e, s, k in PAPER]  # the paper's ratios at hidden 24
MIXED = [
    ("W2(relu(W1(x) * x))", 2, 8),
    ("W3(silu(W1(x)) * W2(x))", 1, 16),
    ("W2(gelu(W1(x)) * W3(x))", 3, 12),
    ("W2(gelu(W1(max(x, tanh(x)))))", 1, 32),
]


def tiny(layers=MIXED, **kw) -> StudentConfig:
    base = dict(vocab_size=60, hidden=24, heads=4, max_position=16, layers=list(layers))
    base.update(kw)
    return StudentConfig(**base)


def batch(b: int = 3, t: int = 7, vocab: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return ids, mask


def test_forward_shapes():
    cfg = tiny(num_labels=3)
    model = Student(cfg, seed=0).eval()
    ids, mask = batch()
    out = model(ids, mask, torch.zeros_like(ids))
    assert out.logits.shape == (3, 3)
    assert out.pooled.shape == (3, 24)
    assert len(out.hidden_states) == cfg.num_layers + 1
    assert all(h.shape == (3, 7, 24) for h in out.hidden_states)
    assert len(out.attention_scores) == cfg.num_layers
    assert all(s.shape == (3, 4, 7, 7) for s in out.attention_scores)
    graphs = [mlpgraph.parse(e) for e, _, _ in MIXED]
    assert cfg.graphs() == graphs  # the config carries graphs; text is derived from them
    assert model.expressions() == [mlpgraph.format(g) for g in graphs]


def test_regression_head_and_errors():
    model = Student(tiny(is_regression=True, num_labels=1), seed=0)
    ids, mask = batch()
    assert model(ids, mask).logits.shape == (3, 1)
    with pytest.raises(ValueError, match="max_position"):
        model(torch.ones(1, 17, dtype=torch.long))


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out  # weight and bias


def by_formula(cfg: StudentConfig) -> dict[str, int]:
    """Parameters counted by hand from the shapes of every part."""
    h, e, vocab = cfg.hidden, cfg.word_width, cfg.vocab_size
    norm = 2 * h  # a LayerNorm's weight and bias
    emb = vocab * e + cfg.max_position * h + cfg.type_vocab * h + norm
    if cfg.trigram:
        emb += linear(3 * e, h)  # [next, this, previous] word vectors -> hidden
    elif e != h:
        emb += linear(e, h)
    attention = [4 * linear(h, h) + norm for _ in cfg.layers]  # q, k, v, output; its norm
    mlp = [layer.stacks * (sum(linear(i, o) for o, i in mlpgraph.linear_shapes(
        layer.graph, h, layer.d_inner(h)).values()) + norm) for layer in cfg.layers]
    head = linear(h, h) + linear(h, cfg.num_outputs)  # pooler, classifier
    return {"embeddings": emb, "total": emb + sum(attention) + sum(mlp) + head}


def test_paper_config_parameter_count():
    cfg = load_config("efficientbert_paper")
    counts = count_parameters(cfg)
    want = by_formula(cfg)
    assert counts["total"] == want["total"]
    # the paper reports ~15.7M and searches inside a 15M..16M window
    assert 15_000_000 <= counts["total"] <= 16_000_000
    assert counts["embeddings"] == want["embeddings"]  # 3-gram embedding of width 128
    full_cfg = cfg.replace(embedding_size=None, trigram=False)  # a 540-wide word table
    full = count_parameters(full_cfg)
    assert full["total"] == by_formula(full_cfg)["total"]
    assert full["total"] - counts["total"] == (
        30522 * (540 - 128) - (3 * 128 + 1) * 540)  # wider table, no projection
    assert count_parameters(load_config("efficientbert_paper_gelu"))["total"] == counts["total"]
    model = Student(cfg, seed=0)
    assert sum(p.numel() for p in model.parameters()) == counts["total"]
    assert model.num_parameters() == counts["total"]


def test_stacks_have_own_weights_and_apply_in_order():
    cfg = tiny(layers=[("W2(gelu(W1(x)))", 3, 16)], dropout=0.0)
    model = Student(cfg, seed=1).eval()
    layer = model.layers[0]
    assert len(layer.mlp.units) == 3 and len(layer.mlp.norms) == 3
    ptrs = {u.weights()["W1"][0].data_ptr() for u in layer.mlp.units}
    assert len(ptrs) == 3
    more = count_parameters(tiny(layers=[("W2(gelu(W1(x)))", 4, 16)]))["total"]
    one_stack = 2 * 24 * 16 + 16 + 24 + 2 * 24
    assert more - count_parameters(cfg)["total"] == one_stack
    ids, mask = batch()
    out = model(ids, mask)
    h = out.hidden_states[0]
    a, _ = layer.attention(h, (mask == 0)[:, None, None, :])
    h = layer.attn_norm(h + a)
    for unit, norm in zip(layer.mlp.units, layer.mlp.norms, strict=True):
        w = unit.weights()
        h = norm(h + mlpgraph.evaluate(unit.graph, h, w, d_inner=16))
    torch.testing.assert_close(h, out.hidden_states[1])


def test_attention_scores_are_pre_softmax_and_masked():
    model = Student(tiny(), seed=2).eval()
    ids, mask = batch()
    out = model(ids, mask)
    att = model.layers[0].attention
    h = out.hidden_states[0]

    def heads(x):
        return x.view(3, 7, 4, 6).transpose(1, 2)

    q, k = heads(att.query(h)), heads(att.key(h))
    expected = q @ k.transpose(-1, -2) / 6 ** 0.5
    scores = out.attention_scores[0]
    keep = (mask == 1)[:, None, None, :].expand_as(scores)
    torch.testing.assert_close(scores[keep], expected[keep])
    assert bool((scores[~keep] <= -1e30).all())  # masked keys are identifiable
    # padding changes nothing at real tokens: compare with the unpadded sequence
    short = model(ids[2:3, :3])
    torch.testing.assert_close(short.hidden_states[-1][0], out.hidden_states[-1][2, :3],
                               rtol=1e-5, atol=1e-5)


def test_trigram_embedding_matches_hand_computation():
    cfg = tiny(embedding_size=8, trigram=True, dropout=0.0)
    model = Student(cfg, seed=3).eval()
    ids = torch.tensor([[5, 17, 3, 42]])
    emb = model.embeddings
    e = emb.word(ids)[0]
    zero = torch.zeros(8)
    rows = []
    for t in range(4):
        nxt = e[t + 1] if t < 3 else zero
        prv = e[t - 1] if t > 0 else zero
        rows.append(torch.cat([nxt, e[t], prv]))
    x = emb.project(torch.stack(rows)) + emb.position.weight[:4] + emb.token_type.weight[0]
    torch.testing.assert_close(model(ids).hidden_states[0][0], emb.norm(x))
    plain = count_parameters(cfg)["embeddings"]
    assert plain == 60 * 8 + (16 + 2) * 24 + 2 * 24 + (3 * 8 * 24 + 24)


def test_save_load_round_trip_is_exact(tmp_path):
    cfg = tiny(layers=PAPER_SMALL, num_labels=3, embedding_size=12, trigram=True)
    model = Student(cfg, seed=4).eval()
    ids, mask = batch()
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert [layer["expr"] for layer in saved["layers"]] == [e for e, _, _ in PAPER_SMALL]
    loaded = Student.from_pretrained(tmp_path / "m").eval()
    assert loaded.expressions() == model.expressions()
    assert loaded.config == model.config
    a, b = model(ids, mask), loaded(ids, mask)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
    with pytest.raises(CheckpointError, match="config.json"):
        Student.from_pretrained(tmp_path / "nothing")
    other = cfg.replace(layers=[("W2(gelu(W1(x)))", 1, 8)] * 6)
    other.save(tmp_path / "m" / "config.json")
    with pytest.raises(CheckpointError, match="does not match"):
        Student.from_pretrained(tmp_path / "m")


def test_mixed_expressions_train():
    model = Student(tiny(), seed=5).train()
    ids, mask = batch()
    model(ids, mask).logits.pow(2).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad
    unit = model.layers[1].mlp.units[0]
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(unit(x), mlpgraph.evaluate(unit.graph, x, unit.weights()))
    assert isinstance(unit, GraphMLP) and set(unit.weights()) == {"W1", "W2", "W3"}


def test_seeded_init_is_deterministic_and_local():
    cfg = tiny()
    torch.manual_seed(0)
    a = Student(cfg, seed=7)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))  # the global RNG was not advanced
    b = Student(cfg, seed=7)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize("name", available_configs())
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.hidden % cfg.heads == 0 and cfg.heads == 12
    assert StudentConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(("change", "field"), [
    ({"hidden": 25}, "hidden"),
    ({"layers": [("W2(gelu(W1(x)))", 1, 8), ("W2(gelu(W1(x)", 1, 8)]}, "layers[1].expr"),
    ({"layers": [("W2(gelu(W1(x)))", 0, 8)]}, "layers[0].stacks"),
    ({"layers": []}, "layers"),
    ({"dropout": 1.5}, "dropout"),
    ({"is_regression": True}, "num_labels"),
    ({"embedding_size": 0}, "embedding_size"),
])
def test_config_errors_name_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        tiny(**change)
    assert info.value.field == field and field in str(info.value)


def test_config_json_errors(tmp_path):
    data = tiny().to_dict()
    data["hiden"] = 3
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        StudentConfig.from_dict(data)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="shipped"):
        load_config("no_such_config")
    cfg = tiny(layers=[mlpgraph.MLPLayer.of("W2(relu(W1(x) * x))", 2, "1/3")])
    assert StudentConfig.load(cfg.save(tmp_path / "ok.json")) == cfg
    with pytest.raises(ConfigError, match="valid integer") as info:
        tiny(heads=4.0)
    assert info.value.field == "heads"


def test_layers_are_mlp_layers():
    g = mlpgraph.parse("W3(silu(W1(x)) * W2(x))")
    layer = mlpgraph.MLPLayer.with_width(g, 2, 8, 24)  # hidden 24: ratio 1/3
    assert layer.ratio == Fraction(1, 3) and layer.d_inner(24) == 8
    assert as_layer(layer, 24) is layer
    for same in ((g, 2, 8), ("W3(silu(W1(x)) * W2(x))", 2, 8), [layer.expr, 2, 8],
                 {"expr": "W3(silu(W1(x)) * W2(x))", "stacks": 2, "d_inner": 8},
                 {"expr": "W3(silu(W1(x)) * W2(x))", "stacks": 2, "ratio": "1/3"}):
        assert as_layer(same, 24) == layer
    cfg = tiny(layers=[layer])
    assert cfg.layers == [layer] and cfg.layers[0].graph is g
    with pytest.raises(ConfigError, match="layers\\[3\\]"):
        as_layer({"graph": g}, 24, 3)
    with pytest.raises(ConfigError, match="one of 'd_inner' or 'ratio'"):
        as_layer({"expr": "W2(gelu(W1(x)))", "d_inner": 8, "ratio": 1}, 24)
    with pytest.raises(ConfigError, match="Graph, got int"):
        as_layer((5, 1, 8), 24)
    with pytest.raises(ConfigError) as info:
        as_layer({"expr": "W2(gelu(W1(x)))", "stacks": 1, "ratio": "-1/2"}, 24, 1)
    assert info.value.field == "layers[1].ratio"
    text = cfg.to_json()  # JSON stays text with absolute widths: old files load unchanged
    assert '"expr": "W3(swish(W1(x)) * W2(x))"' in text and '"d_inner": 8' in text
    assert StudentConfig.from_json(text).layers == [layer]
    # a new width keeps the ratios
    assert cfg.replace(hidden=48).layers[0].d_inner(48) == 16


def test_config_schema_describes_every_field():
    schema = student_schema()
    props = schema["properties"]
    assert set(props) == set(StudentConfig.model_fields)
    assert all(p.get("description") for p in props.values())
    assert props["layers"]["items"]["properties"]["d_inner"]["minimum"] == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("backend", ["eager", "export", "torchscript"])
def test_graph_mlp_owned_and_borrowed_run_the_same_code(backend):
    g = mlpgraph.parse("W3(silu(W1(x)) * W2(x))")
    owner = {"W1": torch.nn.Linear(24, 40), "W2": torch.nn.Linear(24, 40),
             "W3": torch.nn.Linear(40, 30)}
    view = GraphMLP(g, 24, 16, backend=backend, weights=owner, share_weights=True)
    copy = GraphMLP(g, 24, 16, backend=backend, weights=owner)
    assert view.borrowed and not copy.borrowed and not list(view.parameters())
    assert view.fn.code == copy.fn.code and "w3_weight" in view.fn.code  # one functional form
    assert set(view.state_dict()) == set(copy.state_dict()) == {
        f"fn.{n}.{kind}" for n in ("W1", "W2", "W3") for kind in ("weight", "bias")}
    x = torch.randn(2, 5, 24, requires_grad=True)
    sliced = {n: (lin.weight[:o, :i], lin.bias[:o])
              for n, lin, (o, i) in zip(owner, owner.values(),
                                        mlpgraph.linear_shapes(g, 24, 16).values(), strict=True)}
    want = mlpgraph.evaluate(g, x, sliced, d_inner=16)
    torch.testing.assert_close(view(x), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(copy(x), want, rtol=1e-5, atol=1e-6)
    view(x).pow(2).sum().backward()
    grad = owner["W3"].weight.grad
    assert grad[:24, :16].abs().sum() > 0 and bool((grad[24:] == 0).all())
    assert bool((grad[:, 16:] == 0).all())
    assert all(p.grad is None for p in copy.parameters())  # the copy is independent
    with torch.no_grad():
        owner["W1"].weight.mul_(2.0)  # the view reads the owner's live values
    assert not torch.allclose(view(x), copy(x))
