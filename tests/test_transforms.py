"""Per-sample train/eval transforms: MONAI augmentation on real DICOM runs in training only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modfuse.data import MultiModalDataset
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.sources import ArraySource

monai = pytest.importorskip("monai")
pydicom = pytest.importorskip("pydicom")


def _ct_datamodule(**kwargs: object) -> tuple[MultiModalDataModule, torch.Tensor]:
    from modfuse.data.readers.dicom import DicomSource

    path = pydicom.data.get_testdata_file("CT_small.dcm")  # a real CT slice, 128 x 128
    ids = [f"s{i}" for i in range(12)]
    source = DicomSource({sid: path for sid in ids}, window=(40, 400))
    original = source.load("s0")
    ds = MultiModalDataset({"ct": source}, targets=np.arange(12) % 2, ids=ids)
    splits = {"train": list(range(8)), "val": [8, 9], "test": [10, 11]}
    return MultiModalDataModule(ds, splits=splits, batch_size=4, seed=7, **kwargs), original


def _images(loader: object) -> torch.Tensor:
    return torch.cat([b.inputs["ct"] for b in loader])


def test_monai_dict_augmentation_on_dicom_runs_in_training_not_in_validation() -> None:
    from monai.transforms import Compose, RandFlipd, RandRotated

    aug = Compose([RandFlipd(keys="image", prob=0.5, spatial_axis=1), RandRotated(keys="image", range_x=0.4, prob=0.5)])
    dm, original = _ct_datamodule(train_transforms={"ct": aug})
    dm.setup()
    train = _images(dm.train_dataloader())
    assert train.shape == (8, 1, 128, 128) and type(train) is torch.Tensor  # MetaTensors became plain tensors
    changed = [not torch.equal(x, original) for x in train]
    flipped = [torch.allclose(x, original.flip(-1)) for x in train]
    assert all(changed) and any(flipped) and not all(flipped)
    assert len({round(float(x.sum()), 3) for x in train}) > 2  # per sample: differently augmented copies
    for part in ("val", "test"):  # evaluation samples are the file as read
        for x in _images(getattr(dm, f"{part}_dataloader")()):
            assert torch.equal(x, original)
    # seeded per (seed, epoch, sample): the same epoch again is augmented the same way
    again, _ = _ct_datamodule(train_transforms={"ct": aug})
    again.setup()
    torch.testing.assert_close(_images(again.train_dataloader()), train)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # what Lightning does before each epoch
    assert not torch.equal(_images(loader), train)  # another epoch, other draws


def test_eval_transforms_apply_to_evaluation_only_and_array_transforms_work() -> None:
    from monai.transforms import RandFlip, Resize

    dm, original = _ct_datamodule(
        train_transforms={"ct": RandFlip(prob=1.0, spatial_axis=0)}, eval_transforms={"ct": Resize((64, 64))}
    )
    dm.setup()
    train = _images(dm.train_dataloader())
    assert train.shape == (8, 1, 128, 128)
    assert all(torch.equal(x, original.flip(-2)) for x in train)  # array transform, prob 1: every sample
    val = _images(dm.val_dataloader())
    assert val.shape == (2, 1, 64, 64)  # the eval variant, not the train one


def test_a_failing_transform_names_the_sample_and_modality() -> None:
    from modfuse.errors import ModfuseError

    ds = MultiModalDataset({"x": ArraySource(np.ones((4, 3), dtype=np.float32), ids=list("abcd"))}, targets=np.zeros(4))

    def broken(value: torch.Tensor) -> torch.Tensor:
        raise ValueError("expected an image")

    dm = MultiModalDataModule(ds, splits={"train": [0, 1], "val": [2], "test": [3]}, train_transforms={"x": broken})
    with pytest.raises(ModfuseError, match=r"modality 'x' of sample 'a'.*expected an image"):
        next(iter(dm.train_dataloader()))


def test_lightning_fit_augments_each_epoch_differently_and_validates_unaugmented() -> None:
    import lightning as L

    from modfuse.encoders import build
    from modfuse.fusion import EarlyFusion
    from modfuse.training import FusionTask

    seen: dict[str, list[float]] = {"train": [], "eval": []}

    def record(part: str):
        def transform(image: torch.Tensor) -> torch.Tensor:
            noisy = image + torch.rand(()) if part == "train" else image  # torch RNG: seeded per sample
            seen[part].append(round(float(noisy.mean()), 6))
            return noisy

        return transform

    dm, original = _ct_datamodule(train_transforms={"ct": record("train")}, eval_transforms={"ct": record("eval")})
    model = EarlyFusion({"ct": build("xray", arch="small", out_dim=8)})
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(FusionTask(model, lr=1e-3), dm)
    assert len(seen["train"]) == 16 and len(set(seen["train"])) == 16  # 8 samples x 2 epochs, all different
    assert set(seen["eval"]) == {round(float(original.mean()), 6)}  # validation: the image as read


def test_torchvision_and_kornia_transforms_run_per_sample_in_training_only() -> None:
    import torchvision.transforms.v2 as T

    dm, original = _ct_datamodule(
        train_transforms={"ct": T.RandomHorizontalFlip(p=1.0)}, eval_transforms={"ct": T.CenterCrop(96)}
    )
    dm.setup()
    assert all(torch.equal(x, original.flip(-1)) for x in _images(dm.train_dataloader()))
    val = _images(dm.val_dataloader())
    assert val.shape == (2, 1, 96, 96) and torch.equal(val[0], original[:, 16:112, 16:112])
    kornia = pytest.importorskip("kornia")
    # kornia works on batches: a (C, H, W) sample comes back as (1, C, H, W); keepdim keeps its shape
    flip = kornia.augmentation.RandomVerticalFlip(p=1.0, keepdim=True)
    dm, original = _ct_datamodule(train_transforms={"ct": flip})
    dm.setup()
    train = _images(dm.train_dataloader())
    assert train.shape == (8, 1, 128, 128) and all(torch.equal(x, original.flip(-2)) for x in train)
    assert all(torch.equal(x, original) for x in _images(dm.val_dataloader()))
