"""The package's version, written into every cache it builds (`softlabels_version`)."""

__version__ = "0.1.0"
