"""The package as users see it: the contract's names, help() that is
enough to use them, and type stubs that match the functions."""

import ast
import inspect
import pathlib

import convmat

CONTRACT = ["matrix", "bias", "affine", "info", "row_blocks", "unfold", "fold", "weight_jacobian", "operator",
            "spectral_norm", "singular_values"]
STUB = pathlib.Path(convmat.__file__).with_name("__init__.pyi")


def stub_functions():
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_the_contracts_functions_take_layer_and_input_size_and_pytorchs_keywords():
    for name in CONTRACT:
        parameters = inspect.signature(getattr(convmat, name)).parameters
        assert list(parameters)[:2] == ["layer", "input_size"], name
        assert parameters["stride"].default == 1 and parameters["padding"].default == 0, name
        assert parameters["padding_mode"].default == "zeros" and parameters["transposed"].default is False, name
        assert parameters["bias"].default is None and parameters["output_padding"].default == 0, name


def test_help_states_the_convention_and_every_parameter():
    assert "T @ x.reshape(-1) + b == layer(x).reshape(-1)" in convmat.__doc__
    assert "C order" in convmat.__doc__ and "rows of ``T`` are outputs" in convmat.__doc__
    assert "T @ x.reshape(-1) + b == layer(x).reshape(-1)" in convmat.matrix.__doc__
    for name in CONTRACT:
        doc = getattr(convmat, name).__doc__
        assert "%(" not in doc and "Parameters\n    ----------\n    layer :" in doc, name
        assert "input_size : int or tuple of int" in doc and "padding_mode" in doc, name
        for parameter in list(inspect.signature(getattr(convmat, name)).parameters)[2:]:
            assert parameter in doc, (name, parameter)


def test_the_stub_matches_every_public_function():
    stubs = stub_functions()
    for name in convmat.__all__:
        value = getattr(convmat, name)
        if not inspect.isfunction(value):
            continue
        assert name in stubs, f"{name} is missing from {STUB.name}"
        arguments = stubs[name].args
        stub_names = [a.arg for a in arguments.args + arguments.kwonlyargs]
        stub_defaults = [ast.literal_eval(d) for d in arguments.defaults] + [
            ast.literal_eval(d) if d is not None else inspect.Parameter.empty for d in arguments.kw_defaults]
        parameters = inspect.signature(value).parameters.values()
        assert stub_names == [p.name for p in parameters], name
        runtime_defaults = [p.default for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD and
                            p.default is not p.empty] + [p.default for p in parameters if p.kind == p.KEYWORD_ONLY]
        assert stub_defaults == runtime_defaults, name
    assert (STUB.parent / "py.typed").exists()
