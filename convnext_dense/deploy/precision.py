"""``--fp16``: weights and compute in fp16, LayerNorm and the softmax / sigmoid heads in fp32."""
from pathlib import Path

# LayerNorm's mean and variance and the exponentials overflow or lose too much in fp16.
FP32_OPS = ['LayerNormalization', 'Softmax', 'Sigmoid', 'ReduceMean', 'Pow', 'Sqrt', 'Exp']


def _inline_identities(model) -> None:
    # The TorchScript exporter writes weights shared by two modules as Identity(initializer);
    # onnxconverter-common then types the Identity's output wrongly. Copy the weight instead.
    from onnx import numpy_helper
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == 'Identity' and node.input[0] in weights:
            array = numpy_helper.to_array(weights[node.input[0]])
            model.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _retarget_casts(model) -> None:
    # The converter retypes a Cast-to-float's output as fp16 but leaves its `to` attribute at
    # float (the adaptive pools' bin weights): make the attribute say what the graph now expects.
    from onnx import TensorProto
    fp16_values = {info.name for info in model.graph.value_info
                   if info.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for node in model.graph.node:
        if node.op_type == 'Cast' and node.output[0] in fp16_values:
            for attribute in node.attribute:
                if attribute.name == 'to' and attribute.i == TensorProto.FLOAT:
                    attribute.i = TensorProto.FLOAT16


def to_fp16(onnx_file: Path) -> None:
    """Convert ``onnx_file`` in place; inputs and outputs stay fp32."""
    import onnx
    from onnxconverter_common import float16
    model = onnx.load(str(onnx_file))
    _inline_identities(model)
    model = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS)
    _retarget_casts(model)
    onnx.save(model, str(onnx_file))
