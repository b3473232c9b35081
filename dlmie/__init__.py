"""dlmie: Deep Learning Made It Easy.

Importing the package configures PyTensor (see ``dlmie.config``) before anything imports it.
"""

from dlmie import config  # noqa: F401

__version__ = "0.1.0"
