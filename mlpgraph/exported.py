"""Compiled MLPs on disk: a graph and its weights in one safetensors file, nothing that runs.

:func:`save_exported` writes a safetensors file: its tensors are the linears' weights and
biases (``W1.weight``, ``W1.bias``, ...), its header metadata (key ``mlpgraph``) the format,
the graph as RecExpr JSON and the widths. :func:`load_exported` reads it with safetensors
(no pickle), parses the graph with the strict RecExpr reader and rebuilds the
``torch.export`` program from the graph itself, so a file holds data only and a hostile one
cannot run code. Pickles and ``torch.export`` archives (``.pt2``) are refused before anything
in them is read (:class:`~mlpgraph.errors.UnsafeFileError`, naming the member and why).
Why not ``torch.export.save``/``load``: docs/decisions.md (mlpgraph, "Exports are a graph
and safetensors weights").
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .codegen import inner_width
from .compiler import compile_graph
from .cost import linear_shapes
from .errors import (
    BackendError,
    MLPGraphError,
    SerializationError,
    UnsafeFileError,
    loads_json,
)
from .graph import Graph
from .module import ExportedMLP

FORMAT = "mlpgraph.exported/2"
_META = "mlpgraph"  # the safetensors metadata key holding the JSON record
_PICKLE = b"\x80"  # a pickle (protocol 2 and later) starts with the PROTO opcode
_ZIP = b"PK\x03\x04"

__all__ = ["FORMAT", "load_exported", "pickled_member", "save_exported"]


def save_exported(module: nn.Module, path: str | Path) -> Path:
    """Save a module made by :func:`~mlpgraph.compiler.compile_graph` (any backend), with a
    copy of its current weights; :func:`load_exported` reads it back."""
    graph = getattr(module, "mlp_graph", None)
    if not isinstance(graph, Graph):
        raise BackendError(f"save_exported needs a module made by mlpgraph.compile, got "
                           f"{type(module).__name__}")
    tensors = {}
    for name in graph.linears:
        for part in ("weight", "bias"):
            t = getattr(getattr(module, name), part)
            if t is not None:  # a copy: a borrowed slot is a view of a supernet's tensor
                tensors[f"{name}.{part}"] = t.detach().to("cpu", copy=True).contiguous()
    meta = {"format": FORMAT, "graph": graph.to_json(), "d_model": module.d_model,
            "d_inner": module.d_inner}
    path = Path(path)
    save_file(tensors, path, metadata={_META: json.dumps(meta)})
    return path


def load_exported(path: str | Path) -> ExportedMLP:
    """Load a file written by :func:`save_exported` as a module (any leading shape), its
    program exported anew from the stored graph and weights (on CPU)."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            text = (f.metadata() or {}).get(_META)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except SafetensorError as e:
        raise _not_ours(path, str(e)) from None
    if text is None:
        raise SerializationError(f"{path} is a safetensors file but not one written by "
                                 "mlpgraph.exported.save_exported (no 'mlpgraph' metadata)")
    graph, d_model, d_inner = _read_meta(path, text)
    weights = _weights(path, graph, d_model, d_inner, tensors)
    own = compile_graph(graph, d_model, d_inner, "eager", weights=weights, share_weights=False)
    w0 = next(iter(weights.values()))[0] if weights else torch.zeros(())
    x = torch.zeros(2, d_model, dtype=w0.dtype)
    program = torch.export.export(own, (x,),
                                  dynamic_shapes=({0: torch.export.Dim("tokens", min=1)},))
    return ExportedMLP(program, graph, d_model, d_inner)


def _read_meta(path: Path, text: str) -> tuple[Graph, int, int | None]:
    meta = loads_json(text, lambda why: SerializationError(f"{path}: metadata is not JSON: "
                                                           f"{why}"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise SerializationError(f"{path}: format {got!r:.60} is not {FORMAT!r}; re-save it "
                                 "with mlpgraph.exported.save_exported")
    d_model, d_inner = meta.get("d_model"), meta.get("d_inner")
    for name, v, optional in (("d_model", d_model, False), ("d_inner", d_inner, True)):
        if not (v is None and optional) and (isinstance(v, bool) or not isinstance(v, int)
                                             or v < 1):
            raise SerializationError(f"{path}: {name}={v!r} must be a positive integer")
    graph_text = meta.get("graph")
    if not isinstance(graph_text, str):
        raise SerializationError(f"{path}: 'graph' must be RecExpr JSON text")
    try:
        graph = Graph.from_json(graph_text)
    except MLPGraphError as e:
        raise SerializationError(f"{path}: graph: {e}") from None
    return graph, d_model, d_inner


def _weights(path: Path, graph: Graph, d_model: int, d_inner: int | None,
             tensors: dict[str, torch.Tensor]
             ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``name -> (weight, bias)`` for each linear of ``graph``: no tensor missing or extra,
    each of exactly its linear's shape."""
    want = {f"{n}.weight" for n in graph.linears}
    allowed = want | {f"{n}.bias" for n in graph.linears}
    missing, extra = sorted(want - tensors.keys()), sorted(tensors.keys() - allowed)
    if missing or extra:
        raise SerializationError(f"{path}: tensors do not fit the graph {graph}: missing "
                                 f"{missing}, unexpected {extra}")
    try:
        shapes = linear_shapes(graph, d_model, inner_width(graph, d_model, d_inner))
    except MLPGraphError as e:
        raise SerializationError(f"{path}: {e}") from None
    for name, (out, inp) in shapes.items():
        for key, shape in ((f"{name}.weight", (out, inp)), (f"{name}.bias", (out,))):
            if key in tensors and tuple(tensors[key].shape) != shape:
                raise SerializationError(f"{path}: tensor {key} has shape "
                                         f"{tuple(tensors[key].shape)}, the graph {graph} at "
                                         f"d_model={d_model}, d_inner={d_inner} needs {shape}")
    return {n: (tensors[f"{n}.weight"], tensors.get(f"{n}.bias")) for n in graph.linears}


# ------------------------------------------------------------------ refusing other files
def _not_ours(path: Path, why: str) -> SerializationError:
    """The error for a file safetensors cannot read: :class:`UnsafeFileError` for a pickle
    or a zip archive (which is never opened by torch), else a plain format error."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP))
    if head.startswith(_PICKLE):
        return UnsafeFileError(f"{path} is a pickle (it starts with the pickle protocol "
                               "opcode 0x80): unpickling runs arbitrary code, so it is refused "
                               "unread; mlpgraph exports are safetensors files (save_exported)")
    if head == _ZIP:
        found = pickled_member(path.read_bytes())
        where = (f"its member {found[0]} {found[1]}" if found else
                 "torch.export.load evaluates the expression strings of its models/*.json "
                 "with sympy.sympify, which runs Python code")
        return UnsafeFileError(f"{path} is a zip archive (a torch.export .pt2 or torch.save "
                               f"file) and is refused unread: {where}. Re-save the module with "
                               "mlpgraph.exported.save_exported (a safetensors file)")
    return SerializationError(f"{path} is not a file written by save_exported (a safetensors "
                              f"file): {why}")


def pickled_member(data: bytes) -> tuple[str, str] | None:
    """``(member, why)`` for the first member of the zip archive ``data`` that holds a
    pickle (recursively: a ``torch.save`` file inside is a zip holding ``data.pkl``), or a
    payload config that marks a payload ``use_pickle``; ``None`` if there is none."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            name = info.filename
            if name.endswith(".pkl"):
                return name, "is a .pkl file (a pickle)"
            with z.open(info) as member:
                head = member.read(len(_ZIP))
            if head.startswith(_PICKLE):
                return name, "is a pickle (it starts with the pickle protocol opcode 0x80)"
            if head == _ZIP:
                inner = pickled_member(z.read(info))
                if inner:
                    return name, f"is a zip archive whose member {inner[0]} {inner[1]}"
            if name.endswith("_config.json"):
                marked = _marked_pickle(z.read(info))
                if marked:
                    return name, f"marks the payload {marked!r} use_pickle (loaded by unpickling)"
    return None


def _marked_pickle(config: bytes) -> str | None:
    """The first entry of a torch.export payload config with ``use_pickle`` set."""
    try:
        entries = json.loads(config).get("config", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(entries, dict):
        return None
    return next((k for k, v in entries.items() if isinstance(v, dict) and v.get("use_pickle")),
                None)

