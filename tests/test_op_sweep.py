# SPDX-License-Identifier: MIT
# test_op_sweep.py: run with libmemsave preloaded and MEMSAVE_OPS=all. Asks the dispatcher for
# every operator whose name belongs to a covered family and fails when one is on no list
# below: a LibTorch release that adds an entry point must fail here, not lose memory
# silently. Each operator is either ours (a libmemsave kernel on AutogradCPU, checked), a
# composite that reaches a covered operator (checked to be CompositeImplicitAutograd here),
# one whose stock node is already minimal, not a layer of the family at all, or a known
# route that is not covered (each with its reason; docs/limits.md lists them). Operators of
# the lists that this LibTorch lacks are skipped: the lists hold 1.13, 2.6 and 2.14. Only the aten
# namespace: quantized::, prepacked:: and mkldnn_prepacked:: run inference kernels without
# autograd, and prims:: (2.x compile) is issue 13's.
import re
import sys

import torch

# The families' names, as regular expressions over "aten::name.overload"; backward and out=
# variants are not entry points of a forward.
FAMILIES = {
    "conv": r"conv",
    "batchnorm": r"batch_norm",
    "relu": r"^aten::(relu|relu6|threshold|leaky_relu|hardtanh)_?(\.|$)",
    "pool": r"max_pool|avg_pool|^aten::mean(\.|$)",
    "dropout": r"dropout",
    "linear": r"^aten::linear(\.|$)",
    "recipe": r"^aten::(mul\.Tensor|bmm|mm|addmm|native_layer_norm)$",
}

OURS = {
    "aten::convolution", "aten::_convolution",
    "aten::native_batch_norm", "aten::cudnn_batch_norm",
    "aten::relu", "aten::relu_", "aten::threshold", "aten::threshold_", "aten::leaky_relu", "aten::leaky_relu_",
    "aten::hardtanh", "aten::hardtanh_",
    "aten::max_pool1d", "aten::max_pool2d", "aten::max_pool3d",  # composites: Note [Indices the caller never sees]
    "aten::max_pool2d_with_indices", "aten::max_pool3d_with_indices", "aten::avg_pool2d", "aten::avg_pool3d",
    "aten::_adaptive_avg_pool2d", "aten::_adaptive_avg_pool3d", "aten::mean.dim",
    "aten::dropout", "aten::dropout_", "aten::native_dropout",
    "aten::feature_dropout", "aten::feature_dropout_",  # counted passthrough: the noise is (N, C, 1, ...)
    "aten::linear",
    "aten::mul.Tensor", "aten::bmm", "aten::mm", "aten::addmm",  # the recipe family's consumers (hooks/ops/recipe.cpp)
    "aten::native_layer_norm",  # stock's kernel, eps noted: a producer (Note [Layer norm eps])
}

# Composites (CompositeImplicitAutograd) whose stock kernel calls a covered operator.
REACHES = {
    "aten::_convolution.deprecated": "_convolution",
    "aten::_convolution_mode": "convolution (padding 'same'/'valid')",
    "aten::conv1d": "convolution", "aten::conv2d": "convolution", "aten::conv3d": "convolution",
    "aten::conv1d.padding": "_convolution_mode", "aten::conv2d.padding": "_convolution_mode",
    "aten::conv3d.padding": "_convolution_mode",
    "aten::conv_transpose1d": "convolution", "aten::conv_transpose2d.input": "convolution",
    "aten::conv_transpose3d.input": "convolution",
    "aten::batch_norm": "_batch_norm_impl_index",
    "aten::_batch_norm_impl_index": "native_batch_norm or cudnn_batch_norm (miopen_batch_norm on ROCm)",
    "aten::relu6": "hardtanh", "aten::relu6_": "hardtanh_",
    "aten::max_pool1d_with_indices": "max_pool2d_with_indices",
    "aten::avg_pool1d": "avg_pool2d",
    "aten::adaptive_avg_pool1d": "adaptive_avg_pool2d",
    "aten::adaptive_avg_pool2d": "_adaptive_avg_pool2d or mean.dim",
    "aten::adaptive_avg_pool3d": "_adaptive_avg_pool3d or mean.dim",
    "aten::mean.names_dim": "mean.dim (named tensors then fall back, counted)",
}

# Stock's node keeps no more than backward needs.
MINIMAL = {
    "aten::mean": "MeanBackward0 keeps sizes and the element count only",
}

# Names that match a family's pattern but are not its layers' entry points.
NOT_A_LAYER = {
    "aten::_convert_indices_from_coo_to_csr": "sparse index conversion",
    "aten::_convert_indices_from_csr_to_coo": "sparse index conversion",
    "aten::_convert_weight_to_int4pack": "weight packing for int4 matmul",
    "aten::_convert_weight_to_int4pack_for_cpu": "weight packing for int4 matmul",
    "aten::mkldnn_reorder_conv2d_weight": "weight layout conversion",
    "aten::mkldnn_reorder_conv3d_weight": "weight layout conversion",
    "aten::_cudnn_init_dropout_state": "RNN dropout state, no gradient",
    "aten::_fill_mem_eff_dropout_mask_": "attention kernels' mask filler, no gradient",
    "aten::_flash_attention_forward_no_dropout_inplace": "flash attention forward into an out tensor (CUDA, 2.14), not a dropout",
}

# Routes libmemsave does not cover: a call builds stock's node. Backend kernels are reached
# below autograd from the covered operator (so not from nn modules); only a direct call of
# them builds stock's node.
BACKEND = "backend kernel reached below autograd from a covered operator; a direct call builds stock's node"
QUANTIZED_OR_MKLDNN = "quantized or mkldnn tensors, which our kernels leave to stock anyway"
NOT_COVERED = {
    **{op: BACKEND for op in [
        "aten::_conv_depthwise2d", "aten::conv_depthwise3d", "aten::_mps_convolution",
        "aten::_mps_convolution_transpose", "aten::_nnpack_spatial_convolution", "aten::_slow_conv2d_forward",
        "aten::_slow_conv2d_forward.output", "aten::convolution_overrideable", "aten::cudnn_convolution",
        "aten::cudnn_convolution_transpose", "aten::miopen_convolution", "aten::miopen_convolution_transpose",
        "aten::miopen_depthwise_convolution", "aten::mkldnn_convolution", "aten::slow_conv3d_forward",
        "aten::slow_conv3d_forward.output", "aten::slow_conv_dilated2d", "aten::slow_conv_dilated3d",
        "aten::slow_conv_transpose2d", "aten::slow_conv_transpose3d", "aten::miopen_batch_norm",
        "aten::_mps_max_pool2d"]},
    "aten::thnn_conv2d": "composite over _slow_conv2d_forward (a direct call only)",
    "aten::slow_conv3d": "composite over slow_conv3d_forward (a direct call only)",
    "aten::cudnn_convolution_relu": "fused inference kernel (CUDA)",
    "aten::cudnn_convolution_add_relu": "fused inference kernel (CUDA)",
    "aten::miopen_convolution_relu": "fused inference kernel (ROCm)",
    "aten::miopen_convolution_add_relu": "fused inference kernel (ROCm)",
    "aten::conv_tbc": "time-batch-channel convolution (fairseq): its own node keeps input and weight",
    "aten::batch_norm_stats": "SyncBatchNorm piece (CUDA)", "aten::batch_norm_elemt": "SyncBatchNorm piece (CUDA)",
    "aten::batch_norm_gather_stats": "SyncBatchNorm piece (CUDA)",
    "aten::batch_norm_gather_stats_with_counts": "SyncBatchNorm piece (CUDA)",
    "aten::batch_norm_update_stats": "SyncBatchNorm piece (CUDA)",
    "aten::_native_batch_norm_legit": "2.x export/compile decomposition target, not reached by eager batch_norm",
    "aten::_native_batch_norm_legit.no_stats": "2.x export/compile decomposition target",
    "aten::_native_batch_norm_legit_functional": "2.x export/compile decomposition target",
    "aten::_native_batch_norm_legit_no_training": "2.x export/compile decomposition target",
    "aten::_batch_norm_with_update": "2.x export/compile decomposition target",
    "aten::_batch_norm_with_update_functional": "2.x export/compile decomposition target",
    "aten::_batch_norm_no_update": "2.x export/compile decomposition target",
    "aten::adaptive_max_pool1d": "composite over adaptive_max_pool2d",
    "aten::adaptive_max_pool2d": "adaptive max pooling: stock keeps input and indices",
    "aten::adaptive_max_pool3d": "adaptive max pooling: stock keeps input and indices",
    "aten::fractional_max_pool2d": "fractional max pooling: stock keeps input and indices",
    "aten::fractional_max_pool2d.output": "fractional max pooling: stock keeps input and indices",
    "aten::fractional_max_pool3d": "fractional max pooling: stock keeps input and indices",
    "aten::fractional_max_pool3d.output": "fractional max pooling: stock keeps input and indices",
    **{op: QUANTIZED_OR_MKLDNN for op in [
        "aten::quantized_batch_norm", "aten::quantized_max_pool1d", "aten::quantized_max_pool2d",
        "aten::quantized_max_pool3d", "aten::mkldnn_max_pool2d", "aten::mkldnn_max_pool3d",
        "aten::mkldnn_adaptive_avg_pool2d"]},
    "aten::alpha_dropout": "composite whose MulBackward0 keeps the float noise",
    "aten::alpha_dropout_": "composite whose MulBackward0 keeps the float noise",
    "aten::feature_alpha_dropout": "composite; its noise is (N, C, 1, ...), small",
    "aten::feature_alpha_dropout_": "composite; its noise is (N, C, 1, ...), small",
    "aten::_fused_dropout": "legacy CUDA dropout: stock keeps a byte mask",
}


# Routes not covered whose stock node keeps activations carry a counting kernel (Note
# [Uncovered route] in hooks/core/kernel.h): a call counts a fallback naming the operator.
# Not counted: quantized and mkldnn kernels, SyncBatchNorm's pieces (run inside its own
# autograd Function, with grad mode off), fused inference kernels, and composites (which
# reach a counted or covered operator).
NOT_COUNTED = {op for op, why in NOT_COVERED.items() if why == QUANTIZED_OR_MKLDNN or "SyncBatchNorm" in why
               or "fused inference" in why}


def counted_samples():
    """One call of some counted routes, with the family whose fallbacks it must count."""
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    return {
        "aten::adaptive_max_pool2d": ("pool", lambda: torch.nn.functional.adaptive_max_pool2d(x, 3)),
        "aten::fractional_max_pool2d": ("pool", lambda: torch.nn.functional.fractional_max_pool2d(x, 2, output_size=4)),
        "aten::conv_tbc": ("conv", lambda: torch.conv_tbc(torch.randn(5, 2, 4, requires_grad=True), torch.randn(3, 4, 4),
                                                         torch.randn(4), 1)),
    }


FAMILY_SLOT = {"conv": 0, "linear": 1, "batchnorm": 2, "relu": 3, "pool": 4, "dropout": 5, "recipe": 6}


def fallbacks(family):
    import ctypes

    class Stats(ctypes.Structure):
        _fields_ = [("size", ctypes.c_uint64), ("substituted", ctypes.c_uint64 * 8),
                    ("fallbacks", ctypes.c_uint64 * 8), ("passthrough", ctypes.c_uint64 * 8)]
    st = Stats()
    assert ctypes.CDLL(None).memsave_get_stats(ctypes.byref(st), ctypes.sizeof(st)) == 0
    return st.fallbacks[FAMILY_SLOT[family]]


def samples():
    """One call of each composite of REACHES (but mean.names_dim, which falls back on names),
    whose result must come from our node: the claim checked at run time."""
    import torch.nn.functional as F
    A = torch.ops.aten
    x1, x, x3 = (torch.randn(*s, requires_grad=True) for s in [(2, 4, 9), (2, 4, 9, 9), (2, 4, 5, 5, 5)])
    w1, w, w3 = torch.randn(4, 4, 3), torch.randn(4, 4, 3, 3), torch.randn(4, 4, 3, 3, 3)
    stats = torch.zeros(4), torch.ones(4)
    return {
        "aten::_convolution.deprecated":
            lambda: A._convolution.deprecated(x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, False, False, True),
        "aten::_convolution_mode": lambda: A._convolution_mode(x, w, None, [1, 1], "same", [1, 1], 1),
        "aten::conv1d": lambda: F.conv1d(x1, w1), "aten::conv2d": lambda: F.conv2d(x, w),
        "aten::conv3d": lambda: F.conv3d(x3, w3),
        "aten::conv1d.padding": lambda: F.conv1d(x1, w1, padding="same"),
        "aten::conv2d.padding": lambda: F.conv2d(x, w, padding="valid"),
        "aten::conv3d.padding": lambda: F.conv3d(x3, w3, padding="same"),
        "aten::conv_transpose1d": lambda: F.conv_transpose1d(x1, w1),
        "aten::conv_transpose2d.input": lambda: F.conv_transpose2d(x, w),
        "aten::conv_transpose3d.input": lambda: F.conv_transpose3d(x3, w3),
        "aten::batch_norm": lambda: F.batch_norm(x, *stats),
        "aten::_batch_norm_impl_index":
            lambda: A._batch_norm_impl_index(x, None, None, *stats, False, 0.1, 1e-5, True)[0],
        "aten::relu6": lambda: F.relu6(x), "aten::relu6_": lambda: F.relu6(x * 1, inplace=True),
        "aten::max_pool1d_with_indices": lambda: F.max_pool1d(x1, 2, return_indices=True)[0],
        "aten::avg_pool1d": lambda: F.avg_pool1d(x1, 2),
        "aten::adaptive_avg_pool1d": lambda: F.adaptive_avg_pool1d(x1, 3),
        "aten::adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x, 3),
        "aten::adaptive_avg_pool3d": lambda: F.adaptive_avg_pool3d(x3, 2),
    }


def reaches_ours(fn):
    """The name of the first Memsave node on the chain of first inputs from fn()'s grad_fn."""
    g = fn().grad_fn
    while g is not None and not g.name().startswith("Memsave"):
        g = g.next_functions[0][0] if g.next_functions else None
    return g is not None


def entry_points(pattern):
    names = torch._C._dispatch_get_registrations_for_dispatch_key("")
    return sorted(n for n in names if n.startswith("aten::") and re.search(pattern, n) and "backward" not in n
                  and not n.endswith(".out")
                  and "_out" not in n.split(".", 1)[-1] and not n.split("::")[1].split(".")[0].endswith("_out"))


def main():
    ours_registered = set(torch._C._dispatch_get_registrations_for_dispatch_key("AutogradCPU"))
    failures, seen = [], 0
    calls = samples()
    for family, pattern in FAMILIES.items():
        for op in entry_points(pattern):
            seen += 1
            if op in OURS:
                if op not in ours_registered:
                    failures.append(f"{family}: {op} is listed as ours but libmemsave registered no kernel for it")
            elif op in REACHES:
                if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CompositeImplicitAutograd"):
                    failures.append(f"{family}: {op} is listed as a composite, but this LibTorch has no "
                                    "CompositeImplicitAutograd kernel for it")
                elif op in calls and not reaches_ours(calls[op]):
                    failures.append(f"{family}: {op} is listed as reaching {REACHES[op]}, but a call built no "
                                    "libmemsave node")
            elif op in NOT_COVERED:
                composite = torch._C._dispatch_has_kernel_for_dispatch_key(op, "CompositeImplicitAutograd")
                out_form = op.endswith(".output")  # an out= overload: no autograd
                if op not in NOT_COUNTED and not composite and not out_form and op not in ours_registered:
                    failures.append(f"{family}: {op} is not covered, and libmemsave registered no kernel that counts "
                                    "its calls (Note [Uncovered route])")
            elif op not in MINIMAL and op not in NOT_A_LAYER:
                failures.append(f"{family}: {op} is on no list: does it build a node that keeps an activation?")
    for op, (family, call) in counted_samples().items():
        before = fallbacks(family)
        call()
        if fallbacks(family) != before + 1:
            failures.append(f"{family}: a call of {op} counted {fallbacks(family) - before} fallbacks, not 1")
    print(f"{seen} operators of covered families in LibTorch {torch.__version__}: "
          f"{len(OURS & ours_registered)} ours, the rest listed")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
