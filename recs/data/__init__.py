"""Data contract: loading, validation, cleaning, baskets, splits, text rendering, profiles.

Nothing in this package imports torch.
"""

from recs.data.baskets import assign_baskets, basket_table
from recs.data.clean import CleaningReport, clean_events
from recs.data.io import read_table, write_table_atomic
from recs.data.load import LoadReport, load_dataset, load_tables
from recs.data.profile import user_profile, user_profiles
from recs.data.schema import Dataset
from recs.data.splits import Split, leave_last_out, time_split
from recs.data.text import render_item, render_items, render_user, user_histories
from recs.data.validate import Problem, ValidationReport

__all__ = [
    "CleaningReport",
    "Dataset",
    "LoadReport",
    "Problem",
    "Split",
    "ValidationReport",
    "assign_baskets",
    "basket_table",
    "clean_events",
    "leave_last_out",
    "load_dataset",
    "load_tables",
    "read_table",
    "render_item",
    "render_items",
    "render_user",
    "time_split",
    "user_histories",
    "user_profile",
    "user_profiles",
    "write_table_atomic",
]
