"""Data model: batches with per-sample missingness, sources, datasets and the datamodule."""

from __future__ import annotations

from modfuse.data.batch import ModalityBatch, PaddedTensor, encode_present, scatter_rows, take_rows
from modfuse.data.collate import collate_samples
from modfuse.data.datamodule import MultiModalDataModule, ReportingDataLoader
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.sources import ArraySource, Source

__all__ = [
    "ArraySource",
    "ModalityBatch",
    "MultiModalDataModule",
    "MultiModalDataset",
    "PaddedTensor",
    "ReportingDataLoader",
    "Source",
    "collate_samples",
    "encode_present",
    "scatter_rows",
    "take_rows",
]
