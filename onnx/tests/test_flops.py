"""latentface_train.flops counts what it says on a graph whose FLOPs are known by hand."""
import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from latentface_train import flops


def test_conv_matmul_and_elementwise_counts_scale_with_the_batch(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "bias")
    m = numpy_helper.from_array(np.ones((8, 5), np.float32), "m")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "bias"], ["c"], pads=[1, 1, 1, 1]),  # [B, 4, 8, 8]
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("MatMul", ["r", "m"], ["y"])],  # [B, 4, 8, 5]
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 5])], [w, bias, m])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    for b in (1, 3):
        total, by_op = flops.count(path, b)
        conv = 2 * (b * 4 * 8 * 8) * (3 * 3 * 3) + b * 4 * 8 * 8  # multiply-adds x 2, + bias
        assert by_op["Conv"] == conv
        assert by_op["Relu"] == b * 4 * 8 * 8
        assert by_op["MatMul"] == 2 * (b * 4 * 8 * 5) * 8
        assert total == sum(by_op.values())
