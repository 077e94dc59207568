#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus (tests/fuzz/corpus/): a few valid layers
of every rank, kind and padding mode, and a few bad ones. The byte layout
is described at the top of fuzz_convmat.cpp."""
import os
import random

here = os.path.dirname(os.path.abspath(__file__))
random.seed(7)


def seed(rank, transposed=False, asym=False, helper=0, also_float=False, channels=(0, 0, 0), mode=0,
         dims=None, batch=1, fault=0, rows=(0, 3), values=96):
    flags = (rank - 1) | (4 if transposed else 0) | (8 if asym else 0) | (helper << 4) | (128 if also_float else 0)
    out = [flags, *channels, mode]
    for d in range(rank):
        # input, kernel, stride, dilation, padding, padding_end, output_padding
        out += dims[d] if dims else [4, 2, 0, 0, 1, 0, 0]
    out += [batch, fault, rows[0] & 255, rows[1] & 255]
    out += [random.randrange(256) for _ in range(values)]
    return bytes(out)


seeds = {
    "conv1d": seed(1),
    "conv1d_reflect_asym": seed(1, asym=True, mode=1, dims=[[5, 2, 1, 0, 2, 1, 0]]),
    "conv2d_groups_replicate": seed(2, channels=(1, 3, 1), mode=2, dims=[[3, 2, 1, 0, 1, 2, 0], [5, 1, 0, 1, 3, 0, 0]],
                                    batch=2, rows=(5, 9)),
    "conv2d_same_float": seed(2, helper=5, also_float=True, channels=(2, 1, 0), dims=[[5, 2, 0, 1, 0, 0, 0]] * 2),
    "conv3d_circular": seed(3, mode=3, dims=[[3, 1, 0, 0, 1, 1, 0], [2, 2, 1, 0, 2, 0, 0], [4, 0, 0, 2, 0, 0, 0]],
                            values=200),
    "conv3d_full": seed(3, helper=7, dims=[[2, 1, 0, 0, 0, 0, 0]] * 3, values=200),
    "transpose1d": seed(1, transposed=True, dims=[[3, 2, 1, 0, 1, 0, 1]]),
    "transpose2d_groups": seed(2, transposed=True, channels=(1, 1, 1), dims=[[2, 2, 1, 1, 1, 0, 0], [3, 1, 2, 0, 0, 0, 2]],
                               batch=3),
    "transpose3d_float": seed(3, transposed=True, also_float=True, dims=[[1, 1, 1, 0, 0, 0, 1]] * 3, values=200),
    "bad_stride_zero": seed(2, dims=[[4, 2, 200, 0, 0, 0, 0]] * 2),
    "bad_negative_padding": seed(1, dims=[[4, 2, 0, 0, 220, 0, 0]]),
    "bad_reflect_too_wide": seed(1, mode=1, dims=[[2, 2, 0, 0, 3, 0, 0]]),
    "bad_mode": seed(1, mode=9),
    "huge_input": seed(1, dims=[[255, 2, 0, 0, 0, 0, 0]]),
    "huge_dilation": seed(2, dims=[[4, 2, 0, 250, 0, 0, 0]] * 2),
    "huge_channels": seed(2, channels=(255, 0, 0)),
    "large_dense": seed(2, channels=(3, 3, 0), dims=[[236, 0, 0, 0, 0, 0, 0], [236, 0, 0, 0, 0, 0, 0]]),
    "wrong_weight": seed(2, fault=241),
    "wrong_input": seed(3, fault=250, values=200),
    "rows_out_of_range": seed(1, rows=(-3, 100)),
}
os.makedirs(os.path.join(here, "corpus"), exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(here, "corpus", name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds")
