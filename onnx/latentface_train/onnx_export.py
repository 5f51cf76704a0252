"""Export torch functions -- forward passes and gradient steps -- to plain ONNX graphs.

Route (RESEARCH.md §4): a module whose forward may call `torch.func.grad` is traced
with `make_fx(functionalize(...))` under a decomposition table that rewrites every
backward op into forward ops ONNX Runtime runs well, then the traced graph goes
through `torch.onnx.export(dynamo=True, optimize=False)` with a symbolic batch axis.

Why each decomposition is ours:
- convolution_backward: input gradient as a flipped conv (stride 1) or a transposed
  conv (stride > 1); weight gradient as a conv over the batch axis.
- slice_backward / select_backward: zero padding (Pad), not ScatterND.
- pow with a small integer exponent: repeated multiplication (the gradient of pow
  otherwise emits Pow(x, 1.0), a quarter of the run time).
After export the graph is checked: default ONNX domain only, and no Scatter* with
reduction=add (ONNX Runtime CPU gets those wrong with >1 thread when indices repeat).
"""
import os
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten


class ExportError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- decompositions
def _conv_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                   output_padding, groups, output_mask):
    if inp.dim() != 4:
        raise ExportError("only 2-D convolutions are supported")
    if any(d != 1 for d in dilation):
        raise ExportError("dilated convolutions are not supported")
    stride, padding = list(stride), list(padding)
    kh, kw = weight.shape[2], weight.shape[3]
    grad_in = grad_w = grad_b = None
    if output_mask[0]:
        if transposed:
            # y = conv_transpose(x, W) => dx = conv(dy, W) with the same stride/padding/groups
            grad_in = F.conv2d(grad_out, weight, None, stride, padding, 1, groups)
        elif all(s == 1 for s in stride) and padding[0] <= kh - 1 and padding[1] <= kw - 1:
            # stride 1: the input gradient is a correlation with the flipped, in/out-swapped kernel
            out_ch, in_per_g = weight.shape[0], weight.shape[1]
            w = weight.reshape(groups, out_ch // groups, in_per_g, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_g, out_ch // groups, kh, kw).flip(2, 3)
            grad_in = F.conv2d(grad_out, w, None, 1, [kh - 1 - padding[0], kw - 1 - padding[1]], 1, groups)
        else:
            h, w_ = inp.shape[2], inp.shape[3]
            oh, ow = grad_out.shape[2], grad_out.shape[3]
            op = [h - ((oh - 1) * stride[0] - 2 * padding[0] + kh), w_ - ((ow - 1) * stride[1] - 2 * padding[1] + kw)]
            grad_in = F.conv_transpose2d(grad_out, weight, None, stride, padding, op, groups)
    if output_mask[1]:
        if transposed or groups != 1:
            raise ExportError("weight gradients only for plain convolutions (groups=1)")
        # dW[o,i] = sum_b corr(x[b,i], dy[b,o]): a convolution over the batch axis
        gw = F.conv2d(inp.transpose(0, 1), grad_out.transpose(0, 1), None, 1, padding, stride)
        grad_w = gw.transpose(0, 1)[:, :, :kh, :kw]
    if output_mask[2]:
        grad_b = grad_out.sum(dim=[0, 2, 3])
    return grad_in, grad_w, grad_b


def _slice_backward(grad_out, input_sizes, dim, start, end, step):
    if step != 1:
        raise ExportError("strided slice gradients are not supported (use a strided conv instead)")
    size = input_sizes[dim]
    dim = dim % len(input_sizes)
    start = 0 if start is None else (start + size if start < 0 else start)
    end = size if end is None else (end + size if end < 0 else end)
    start, end = min(max(start, 0), size), min(max(end, start), size)
    pad = [0, 0] * (len(input_sizes) - dim - 1) + [start, size - end]
    return F.pad(grad_out, pad)


def _select_backward(grad_out, input_sizes, dim, index):
    dim = dim % len(input_sizes)
    size = input_sizes[dim]
    index = index + size if index < 0 else index
    return _slice_backward(grad_out.unsqueeze(dim), input_sizes, dim, index, index + 1, 1)


def _pow_scalar(x, exponent):
    if exponent == 1:
        return x * 1
    if exponent == 2:
        return x * x
    if exponent == 3:
        return x * x * x
    if exponent == 0.5:
        return torch.sqrt(x)
    if exponent == -0.5:
        return torch.rsqrt(x)
    return aten.pow.Tensor_Scalar(x, exponent)


def decomposition_table():
    table = dict(core_aten_decompositions())
    for op in [aten.upsample_bilinear2d.default, aten.upsample_bilinear2d.vec]:
        table.pop(op, None)
    table[aten.convolution_backward.default] = _conv_backward
    table[aten.slice_backward.default] = _slice_backward
    table[aten.select_backward.default] = _select_backward
    table[aten.pow.Tensor_Scalar] = _pow_scalar
    return table


# ----------------------------------------------------------------------------- tracing + export
FORBIDDEN_OPS = {"ScatterND", "ScatterElements", "Scatter", "GridSample", "Resize", "Loop", "If"}


def check_graph(model, path="<graph>"):
    """Raise ExportError for ops this project's graphs must not contain."""
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ExportError(f"{path}: non-default domain op {node.domain}::{node.op_type}")
        if node.op_type in FORBIDDEN_OPS:
            red = [a.s.decode() for a in node.attribute if a.name == "reduction"]
            raise ExportError(f"{path}: forbidden op {node.op_type} {red} ({node.name})")
    for f in model.functions:
        raise ExportError(f"{path}: graph contains local function {f.name}; inline it")


def export_module(module, example_args, input_names, output_names, path, batch_dims=None):
    """Trace `module(*example_args)` and write a standalone ONNX graph to `path`.

    Every input's axis 0 is the symbolic batch unless `batch_dims` says otherwise
    (a list of True/False per input).
    """
    path = Path(path)
    module = module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    gm = make_fx(torch.func.functionalize(module), decomposition_table=decomposition_table(),
                 tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example_args)
    gm.recompile()
    batch = torch.export.Dim("batch", min=1, max=4096)
    if batch_dims is None:
        batch_dims = [True] * len(example_args)
    dyn = tuple({0: batch} if b else {} for b in batch_dims)
    tmp = path.with_name(path.name + ".tmp")
    prog = torch.onnx.export(gm, tuple(example_args), dynamo=True, opset_version=18, optimize=False,
                             input_names=input_names, output_names=output_names, dynamic_shapes=dyn,
                             external_data=False, verbose=False, report=False)
    model = prog.model_proto
    model = _rename_batch_dim(model)
    for node in model.graph.node:  # tracing provenance: half the file size, no use at run time
        del node.metadata_props[:]
        node.doc_string = ""
    check_graph(model, str(path))
    onnx.checker.check_model(model)
    onnx.save_model(model, tmp)
    os.replace(tmp, path)
    return model


def _rename_batch_dim(model):
    """Give the symbolic batch axis the name 'batch' on every graph input and output."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            dims[0].dim_param = "batch"
    return model


def io_spec(model):
    """[(name, shape list with 'batch', dtype)] for inputs and outputs, for the manifest."""
    def spec(vi):
        shape = [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
        return {"name": vi.name, "shape": shape, "dtype": dtype}
    inits = {i.name for i in model.graph.initializer}
    return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])
