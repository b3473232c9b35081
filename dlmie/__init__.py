"""dlmie: Deep Learning Made It Easy.

Importing the package configures PyTensor (see ``dlmie.config``) before anything imports it, and,
under IPython, shows the error of an unfinished assignment part as one line (see ``dlmie.assignment``).
"""

from dlmie import assignment, config  # noqa: F401

assignment.install()

__version__ = "0.1.0"
