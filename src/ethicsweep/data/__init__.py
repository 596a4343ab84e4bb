"""Data: bundled and user tables, sensitive groups, seeded splits, preprocessing."""

from ethicsweep.data.groups import Groups, encode_groups
from ethicsweep.data.loaders import BUNDLED, Table, load_adult, load_bundled, load_compas, load_german, load_table
from ethicsweep.data.prepare import PreparedData, Split, load, prepare

__all__ = [
    "BUNDLED", "Groups", "PreparedData", "Split", "Table", "encode_groups", "load", "load_adult",
    "load_bundled", "load_compas", "load_german", "load_table", "prepare",
]  # fmt: skip
