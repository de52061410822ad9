"""The train / val DataLoaders, built the same way by every datamodule of the zoo."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset


class TrainValDataModule(pl.LightningDataModule):
    """Serves `self.train_set` and `self.val_set` (val also for test and predict).

    Train batches are shuffled and all full when there is more than one: timm's Mixup needs
    even-sized batches and BatchNorm on pooled maps fails on a batch of one. Folder datamodules
    that fall back to an in-memory embedded set (`self.embedded`) load it without workers, which
    would only add start-up time.
    """

    embedded: pl.LightningDataModule | None = None

    def describe(self) -> str:
        """The data in a few words, for figure titles: the folder read, or the embedded stand-in."""
        if self.embedded is not None:
            return f"{self.embedded.describe()} (no data.root)"
        root = getattr(self, "root", None)
        return f"{type(self).__name__} {root}" if root is not None else type(self).__name__

    def eval_batch_size(self) -> int:
        return self.hparams.batch_size

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = 0 if self.embedded is not None else self.hparams.num_workers
        batch_size = self.hparams.batch_size if train else self.eval_batch_size()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
