"""A RandAugment pipeline for `--augment bench/strong_augment.py:randaugment` (bench/regimes.py): the
kind of strong augmentation current recipes use, cached and replayed exactly from one seed per view."""

from torchvision.transforms import v2


def randaugment():
    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.RandAugment(num_ops=2, magnitude=9)])
