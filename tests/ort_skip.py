"""One-node ONNX Runtime models of com.microsoft's SkipLayerNormalization and
SkipSimplifiedLayerNormalization (CPU), the peers of fastnorm's add_layer_norm / add_rms_norm in
tests/test_add_norm.py and benchmarks/bench_add_norm.py. Needs onnx and onnxruntime (imported
here: callers importorskip them first)."""
import numpy as np


def skip_norm_session(rms, shape, weight, bias=None, eps=1e-5, threads=2):
    """f(x, r) -> (y, x + r) running SkipLayerNormalization (rms=False; gamma=weight,
    beta=bias) or SkipSimplifiedLayerNormalization (rms=True) on arrays of `shape` and weight's
    dtype (float32 or float16)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    dtype = np.dtype(weight.dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    inits = [numpy_helper.from_array(np.ascontiguousarray(weight), "gamma")]
    inputs = ["x", "r", "gamma"]
    if not rms and bias is not None:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(bias, dtype), "beta"))
        inputs.append("beta")
    op = "SkipSimplifiedLayerNormalization" if rms else "SkipLayerNormalization"
    # outputs: output, mean, inv_std_var (unused: ""), input_skip_bias_sum
    node = helper.make_node(op, inputs, ["y", "", "", "s"], domain="com.microsoft", epsilon=eps)
    io = lambda n: helper.make_tensor_value_info(n, elem, list(shape))  # noqa: E731
    graph = helper.make_graph([node], "skip_norm", [io("x"), io("r")], [io("y"), io("s")],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return lambda x, r: sess.run(None, {"x": x, "r": r})
