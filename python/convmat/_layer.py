"""Reading a layer: a torch.nn convolution, or a weight array with PyTorch's
keywords, into the shape and arrays the C++ library takes.

Everything here is translation: attributes are read and checked for form
(the right number of entries, a supported dtype); the library validates the
layer itself and computes everything else, "same" padding included.
"""

import collections.abc
import dataclasses
import operator
import sys

import numpy as np

from . import _convmat

#: The keywords a weight array comes with, and their defaults: PyTorch's.
KEYWORDS = {
    "stride": 1,
    "padding": 0,
    "dilation": 1,
    "groups": 1,
    "padding_mode": "zeros",
    "transposed": False,
    "output_padding": 0,
    "bias": None,
}

DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

_CONVOLUTIONS = ("Conv1d", "Conv2d", "Conv3d")
_TRANSPOSED = ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer as the C++ library takes it: its shape, its weights
    (C-contiguous, a supported dtype) and its bias (None, or out_channels
    values of the weights' dtype); `name` describes it in messages."""

    shape: _convmat.LayerShape
    weight: np.ndarray
    bias: object
    name: str

    @property
    def transposed(self):
        return self.shape.transposed

    @property
    def dtype(self):
        return self.weight.dtype

    def bias_or_zeros(self):
        """The bias, or zeros for a layer without one."""
        if self.bias is None:
            return np.zeros(self.shape.out_channels, self.weight.dtype)
        return self.bias


def _torch():
    """PyTorch if the caller has imported it: a torch object cannot exist otherwise."""
    return sys.modules.get("torch")


def follow_torch_threads():
    """Makes this thread's OpenMP thread count torch's, before C++ work.

    A process has one OpenMP runtime, but its thread count is per thread: a
    worker thread that has not touched torch still has the runtime's
    default (every core). torch.get_num_threads() sets the calling thread's
    count to torch's as it answers, so asking it is enough."""
    torch = _torch()
    if torch is not None:
        torch.get_num_threads()


def _type_name(value):
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def as_array(value, what):
    """`value` (a NumPy array, a torch tensor or a nested sequence) as a
    C-contiguous NumPy array of a supported dtype, without a copy where it
    already is one; TypeError naming any other dtype."""
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        if value.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            _refuse_dtype(what, value.dtype)
        if value.device.type == "meta":
            raise TypeError(f"convmat: {what} is on the meta device and holds no values: materialise the "
                            f"layer first (for example module.to_empty(device='cpu') and load its weights)")
        value = value.detach().cpu().resolve_conj().numpy()
    array = np.asarray(value)
    if array.dtype not in DTYPES:
        _refuse_dtype(what, array.dtype)
    return np.ascontiguousarray(array)


def _refuse_dtype(what, dtype):
    raise TypeError(f"convmat: {what} has dtype {dtype}; convmat takes float32, float64, complex64 or complex128 "
                    f"(convert with .astype(numpy.float32) or, for a tensor, .float())")


def _index(value, what):
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"convmat: {what} must be an integer, not {value!r}") from None
    if not -2**63 <= number < 2**63:
        raise ValueError(f"convmat: {what}={number} does not fit the library's 64-bit sizes "
                         f"(at most {2**63 - 1})")
    return number


def _is_sequence(value):
    """Whether value holds several values (a tuple, list, torch.Size, array), not one."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, collections.abc.Sequence) and not isinstance(value, str)


def _per_axis(value, rank, what):
    """An int for every axis, or one per axis, as a list of `rank` ints."""
    if not _is_sequence(value):
        return [_index(value, what)] * rank
    if len(value) != rank:
        raise ValueError(f"convmat: {what}={tuple(value)!r} has {len(value)} entries, but the layer has {rank} "
                         f"spatial dimensions")
    return [_index(v, what) for v in value]


def _padding(value, rank):
    """("same" | "valid" | "explicit", begin, end) from PyTorch's padding: an
    int, 'same', 'valid', or per axis an int or a (begin, end) pair."""
    if isinstance(value, str):
        if value not in ("same", "valid"):
            raise ValueError(f"convmat: padding must be an int, 'same', 'valid' or one entry per axis, "
                             f"not {value!r}")
        return value, [0] * rank, [0] * rank
    if not _is_sequence(value):
        p = _index(value, "padding")
        return "explicit", [p] * rank, [p] * rank
    if len(value) != rank:
        raise ValueError(f"convmat: padding={tuple(value)!r} has {len(value)} entries, but the layer has {rank} "
                         f"spatial dimensions (asymmetric padding: one (begin, end) pair per axis)")
    begin, end = [], []
    for entry in value:
        if _is_sequence(entry):
            if len(entry) != 2:
                raise ValueError(f"convmat: padding entry {tuple(entry)!r} must be an int or a (begin, end) pair")
            begin.append(_index(entry[0], "padding"))
            end.append(_index(entry[1], "padding"))
        else:
            begin.append(_index(entry, "padding"))
            end.append(begin[-1])
    return "explicit", begin, end


def _spatial_size(input_size, rank, in_channels, name):
    """The spatial part of input_size: the spatial size itself, or a (C, ...)
    or (N, C, ...) shape whose C is checked against the layer."""
    size = tuple(_index(s, "input_size") for s in (input_size if _is_sequence(input_size) else (input_size,)))
    if len(size) == rank:
        return list(size)
    if len(size) in (rank + 1, rank + 2):
        channels = size[-rank - 1]
        if channels != in_channels:
            raise ValueError(f"convmat: input_size={size} has {channels} channels, but {name} takes "
                             f"in_channels={in_channels}")
        return list(size[-rank:])
    raise ValueError(f"convmat: input_size={size} must be the spatial size ({rank} numbers), (C, ...) or "
                     f"(N, C, ...) for {name}")


def _torch_settings(layer, torch):
    """The weight and keywords of a torch.nn convolution, every attribute read."""
    kind = type(layer)
    transposed = isinstance(layer, tuple(getattr(torch.nn, n) for n in _TRANSPOSED))
    if not transposed and not isinstance(layer, tuple(getattr(torch.nn, n) for n in _CONVOLUTIONS)):
        raise TypeError(f"convmat: cannot read a {_type_name(layer)}: the layer must be a torch.nn.Conv1d/2d/3d "
                        f"or ConvTranspose1d/2d/3d, or a weight array")
    if torch.nn.parameter.is_lazy(layer.weight):
        raise ValueError(f"convmat: the {kind.__name__} has not been initialized yet: run it on an input first")
    return {
        "weight": layer.weight,
        "bias": layer.bias,
        "stride": list(layer.stride),
        "padding": layer.padding if isinstance(layer.padding, str) else list(layer.padding),
        "dilation": list(layer.dilation),
        "groups": layer.groups,
        "padding_mode": layer.padding_mode,
        "transposed": transposed,
        "output_padding": list(layer.output_padding),
    }


def read_layer(layer, input_size, keywords):
    """The Layer that `layer` (a torch.nn convolution or a weight array) and
    the keywords passed with it describe, on an input of `input_size`."""
    follow_torch_threads()
    torch = _torch()
    if torch is not None and isinstance(layer, torch.nn.Module):
        if keywords:
            raise TypeError(f"convmat: {', '.join(sorted(keywords))} come from the {type(layer).__name__} itself; "
                            f"pass keywords only with a weight array")
        settings, name = _torch_settings(layer, torch), repr(layer)
    elif isinstance(layer, np.ndarray) or (torch is not None and isinstance(layer, torch.Tensor)):
        settings, name = {**KEYWORDS, **keywords, "weight": layer}, f"the layer of weights {tuple(layer.shape)}"
    else:
        raise TypeError(f"convmat: cannot read a {_type_name(layer)}: the layer must be a torch.nn.Conv1d/2d/3d "
                        f"or ConvTranspose1d/2d/3d, or a weight array (numpy.ndarray or torch.Tensor)")

    weight = as_array(settings["weight"], "weight")
    if weight.ndim < 3:
        raise ValueError(f"convmat: weights of shape {weight.shape} have no kernel: a convolution's weights are "
                         f"(out_channels, in_channels / groups, *kernel_size)")
    rank = weight.ndim - 2
    transposed = bool(settings["transposed"])
    groups = _index(settings["groups"], "groups")
    output_padding = _per_axis(settings["output_padding"], rank, "output_padding")
    if not transposed and any(output_padding):
        raise ValueError(f"convmat: output_padding={settings['output_padding']!r} is for a transposed "
                         f"convolution: pass transposed=True with a ConvTranspose's weights "
                         f"(in_channels, out_channels / groups, *kernel_size)")
    if transposed:  # weights (in_channels, out_channels / groups, *kernel_size)
        in_channels, out_channels = weight.shape[0], weight.shape[1] * groups
    else:  # weights (out_channels, in_channels / groups, *kernel_size)
        in_channels, out_channels = weight.shape[1] * groups, weight.shape[0]
    padding, begin, end = _padding(settings["padding"], rank)
    if not isinstance(settings["padding_mode"], str):
        raise TypeError(f"convmat: padding_mode must be a string, not {settings['padding_mode']!r}")
    shape = _convmat.LayerShape(
        transposed=transposed,
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups,
        input_size=_spatial_size(input_size, rank, in_channels, name),
        kernel_size=list(weight.shape[2:]),
        stride=_per_axis(settings["stride"], rank, "stride"),
        dilation=_per_axis(settings["dilation"], rank, "dilation"),
        padding=padding,
        padding_begin=begin,
        padding_end=end,
        output_padding=output_padding,
        padding_mode=settings["padding_mode"],
    )
    bias = settings["bias"]
    if bias is not None:
        bias = as_array(bias, "bias").reshape(-1).astype(weight.dtype, casting="same_kind", copy=False)
    return Layer(shape, weight, bias, name)
