"""Data model: batches with per-sample missingness, sources, datasets, datamodules, splits and
standardisation."""

from __future__ import annotations

from modfuse.data.batch import ModalityBatch, PaddedTensor, encode_present, scatter_rows, take_rows
from modfuse.data.collate import collate_samples
from modfuse.data.datamodules.base import MultiModalDataModule, ReportingDataLoader
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.loaders import iter_batches
from modfuse.data.sources import ArraySource, MaskedSource, MemoizedSource, Source
from modfuse.data.transforms import Standardizer

__all__ = [
    "ArraySource",
    "MaskedSource",
    "MemoizedSource",
    "ModalityBatch",
    "MultiModalDataModule",
    "MultiModalDataset",
    "PaddedTensor",
    "ReportingDataLoader",
    "Source",
    "Standardizer",
    "collate_samples",
    "encode_present",
    "iter_batches",
    "scatter_rows",
    "take_rows",
]
