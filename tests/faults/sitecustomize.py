"""Fault injection for the end-to-end fault tests, in every Python process of a sweep (the
driver and Ray's workers), by putting this directory on PYTHONPATH. Nothing in ethicsweep
knows of it.

``ETHICSWEEP_FAULT_NAN_HIDDEN=H`` and ``ETHICSWEEP_FAULT_NAN_AFTER=N``: a model built with
``model.hidden == H`` outputs NaN from its N-th forward pass in training mode on (the
ones before are untouched), as a model that diverges mid-training would.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "ethicsweep.trainables.train"


def _nan_after(model, after: int):
    import torch

    calls = {"n": 0}

    def hook(module, inputs, output):
        if not module.training:
            return output
        calls["n"] += 1
        return output * torch.nan if calls["n"] >= after else output

    model.register_forward_hook(hook)
    return model


def _patch(module) -> None:
    hidden, after = int(os.environ["ETHICSWEEP_FAULT_NAN_HIDDEN"]), int(os.environ.get("ETHICSWEEP_FAULT_NAN_AFTER", "1"))
    build = module.build_model

    def build_model(spec, n_features):
        model = build(spec, n_features)
        return _nan_after(model, after) if spec.kind == "mlp" and spec.hidden == hidden else model

    module.build_model = build_model


class _Finder(importlib.abc.MetaPathFinder):
    """Patches ``TARGET`` right after it is first imported."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            _patch(module)

        loader.exec_module = patched
        return spec


if os.environ.get("ETHICSWEEP_FAULT_NAN_HIDDEN"):
    sys.meta_path.insert(0, _Finder())
